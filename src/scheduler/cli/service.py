"""``service install | uninstall | status``: run the daemon under systemd (Linux) or launchd (macOS).

The files come from ``scheduler/servicefiles.py``. Install refuses a second scheduler on the same
database: a daemon already serving it, or another installed unit or plist naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from scheduler.cli.context import Context, Handler
from scheduler.errors import DaemonLockedError, SchedulerError, ValidationError
from scheduler.servicefiles import (
    ServiceFile,
    ServicePlan,
    default_manager,
    inputs_from,
    plan,
    quoted_command,
    service_files_for_database,
)

INSTALL_USAGE: Final = "service install [--system] [--dry-run] [--manager systemd|launchd]"
UNINSTALL_USAGE: Final = "service uninstall [--system] [--dry-run] [--manager systemd|launchd]"
STATUS_USAGE: Final = "service status [--system] [--manager systemd|launchd]"
COMMAND_TIMEOUT_S: Final = 60


class ServiceCommandError(SchedulerError):
    """systemctl or launchctl failed."""


def _plan_of(ctx: Context) -> ServicePlan:
    import pwd

    from scheduler import paths

    system = ctx.flag("--system")
    manager = ctx.option("--manager") or default_manager(sys.platform)
    user = pwd.getpwuid(os.getuid()).pw_name
    if system and os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        user = os.environ["SUDO_USER"]  # `sudo … --system`: the daemon runs as who asked, not root
    inputs = inputs_from(os.environ, python=sys.executable, db=paths.db_path(), user=user,
                         uid=os.getuid())
    return plan(manager, system=system, inputs=inputs)


def cmd_install(ctx: Context) -> int:
    dry_run = ctx.flag("--dry-run")
    service = _plan_of(ctx)
    ctx.no_extra(0, INSTALL_USAGE)
    commands = service.install_commands
    if _refuse_a_second_scheduler(service) and service.restart_command is not None:
        commands = (*commands, service.restart_command)
    if dry_run:
        return _show(ctx, service, commands, "install")
    for file in service.files:
        _write(file)
    _run_all(commands)
    ctx.out.emit({"ok": True, "manager": service.manager, "scope": service.scope,
                  "files": [str(f.path) for f in service.files],
                  "commands": [quoted_command(c) for c in commands]},
                 f"installed {service.service_file.path} ({service.manager}, {service.scope}); "
                 f"see `openclaw-scheduler service status`")
    return 0


def _refuse_a_second_scheduler(service: ServicePlan) -> bool:
    """Raise if another scheduler would share the database; True when the daemon serving it is
    this very service (a re-install: it is restarted with the new files)."""
    from scheduler import paths
    from scheduler.engine.lock import probe

    database = paths.db_path().expanduser().absolute()
    holder = probe(database)
    ours = holder["running"] and _is_the_service(service, holder["pid"])
    if holder["running"] and not ours:
        raise DaemonLockedError(
            f"a scheduler daemon (pid {holder['pid']}) already serves {database}; a service would "
            "be a second scheduler on it: stop that daemon first, then install")
    inputs = inputs_from(os.environ, python=sys.executable, db=database, user="", uid=os.getuid())
    others = service_files_for_database(database, inputs, skip=service.service_file.path)
    if others:
        raise DaemonLockedError(
            f"{others[0]} already runs a scheduler on {database}; two would share it: remove that "
            "service first (or point SCHEDULER_DB at another database)")
    return bool(ours)


def _is_the_service(service: ServicePlan, pid: object) -> bool:
    if service.main_pid_command is None or not service.service_file.path.exists():
        return False
    try:
        done = subprocess.run(service.main_pid_command, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == str(pid)


def cmd_uninstall(ctx: Context) -> int:
    dry_run = ctx.flag("--dry-run")
    service = _plan_of(ctx)
    ctx.no_extra(0, UNINSTALL_USAGE)
    if not service.service_file.path.exists():
        raise ValidationError(f"no {service.scope} service installed at {service.service_file.path}")
    commands = (*service.uninstall_commands, *service.after_removal_commands)
    if dry_run:
        return _show(ctx, service, commands, "uninstall")
    _run_all(service.uninstall_commands)
    removed = [str(f.path) for f in service.files if _remove(f.path)]
    _run_all(service.after_removal_commands)
    ctx.out.emit({"ok": True, "removed": removed, "commands": [quoted_command(c) for c in commands]},
                 "removed " + ", ".join(removed))
    return 0


def cmd_status(ctx: Context) -> int:
    from scheduler import paths
    from scheduler.engine.lock import probe

    service = _plan_of(ctx)
    ctx.no_extra(0, STATUS_USAGE)
    installed = service.service_file.path.exists()
    data: dict[str, Any] = {
        "ok": True, "manager": service.manager, "scope": service.scope,
        "path": str(service.service_file.path), "installed": installed,
        "enabled": _ask(service.enabled_command, service.manager) if installed else False,
        "running": _ask(service.active_command, service.manager) if installed else False,
        "daemon": probe(paths.db_path()),
    }
    ctx.out.emit(data, _status_text(data))
    return 0


def _ask(command: tuple[str, ...], manager: str) -> bool | None:
    """systemd: ``is-enabled``/``is-active`` print the state; launchd: ``print`` succeeds when
    loaded. None when the manager cannot be asked (not installed, no user session)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if manager == "launchd":
        return done.returncode == 0
    answer = done.stdout.strip()
    if answer in ("enabled", "enabled-runtime", "active", "reloading", "activating"):
        return True
    if answer in ("disabled", "inactive", "failed", "masked", "static", "linked", "deactivating"):
        return False
    return None


def _status_text(data: dict[str, Any]) -> str:
    def word(value: bool | None) -> str:
        return "unknown (the service manager did not answer)" if value is None else (
            "yes" if value else "no")

    daemon = data["daemon"]
    serving = f"yes (pid {daemon['pid']})" if daemon["running"] else "no"
    return "\n".join([
        f"service:   {data['manager']} {data['scope']} unit {data['path']}",
        f"installed: {word(data['installed'])}",
        f"enabled:   {word(data['enabled'])}",
        f"running:   {word(data['running'])}",
        f"a daemon serves the database: {serving}",
    ])


def _show(ctx: Context, service: ServicePlan, commands: tuple[tuple[str, ...], ...], what: str) -> int:
    data = {"ok": True, "dry_run": True, "manager": service.manager, "scope": service.scope,
            "files": [{"path": str(f.path), "mode": f"{f.mode:04o}", "content": f.shown()}
                      for f in service.files],
            "commands": [quoted_command(c) for c in commands]}
    parts = [f"# {what} ({service.manager}, {service.scope}); dry run: nothing written, nothing run"]
    if what == "install":
        for file in service.files:
            parts += [f"\n# --- {file.path} (mode {file.mode:04o})", file.shown().rstrip("\n")]
    else:
        parts += ["\n# files removed:", *(f"#   {f.path}" for f in service.files)]
    parts += ["\n# commands:", *(quoted_command(c) for c in commands)]
    ctx.out.emit(data, "\n".join(parts))
    return 0


def _write(file: ServiceFile) -> None:
    """Created with its final mode (a token is never readable by others, even for an instant)."""
    try:
        file.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = file.path.with_name(f".{file.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file.mode)
        try:
            os.fchmod(fd, file.mode)
            os.write(fd, file.content.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, file.path)
    except OSError as exc:
        raise ServiceCommandError(
            f"cannot write {file.path}: {exc.strerror or exc}"
            + ("; --system needs root (sudo)" if isinstance(exc, PermissionError) else "")) from None


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ServiceCommandError(f"cannot remove {path}: {exc.strerror or exc}") from None
    return True


def _run_all(commands: tuple[tuple[str, ...], ...]) -> None:
    for command in commands:
        _run(command)


def _run(command: tuple[str, ...]) -> None:
    shown = quoted_command(command)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise ServiceCommandError(f"{command[0]} not found: cannot run `{shown}`; the files are "
                                  "written, run the command where the service manager is") from None
    except subprocess.TimeoutExpired:
        raise ServiceCommandError(f"`{shown}` did not finish within {COMMAND_TIMEOUT_S}s") from None
    if done.returncode != 0:
        why = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServiceCommandError(f"`{shown}` failed (exit {done.returncode})"
                                  + (f": {why[0]}" if why else ""))


COMMANDS: dict[tuple[str, str | None], Handler] = {
    ("service", "install"): cmd_install,
    ("service", "uninstall"): cmd_uninstall,
    ("service", "status"): cmd_status,
}
