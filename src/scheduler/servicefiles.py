"""The files and commands of ``service install``: a systemd unit or a launchd plist.

Pure generation: :func:`plan` turns what the operator runs now (interpreter, database, gateway
settings) into a :class:`ServicePlan`; ``cli/service.py`` prints it (``--dry-run``) or carries it
out. Both managers can be generated on any OS, so tests and dry runs need neither.

The gateway token is never written into the unit or plist, which other users may read: systemd
gets it from an ``EnvironmentFile`` created 0600, launchd (which has no such thing) from a token
file created 0600 that ``OPENCLAW_GATEWAY_TOKEN_PATH`` names. A token that already lives in a
token file is not copied at all: the service is pointed at that file.
"""

from __future__ import annotations

import plistlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scheduler.errors import ValidationError

UNIT_NAME: Final = "openclaw-scheduler.service"
LAUNCHD_LABEL: Final = "ai.openclaw.scheduler"
DEFAULT_GATEWAY_URL: Final = "http://127.0.0.1:18789"
DEFAULT_TOKEN_PATH: Final = "~/.openclaw/credentials/.gateway-token"
# The loop pings every half of this; a loop stuck this long is restarted by systemd.
WATCHDOG_S: Final = 60
RESTART_S: Final = 5
# Past the daemon's shutdown grace, it ends itself within 10 s; the manager waits a little more.
STOP_MARGIN_S: Final = 20
DEFAULT_GRACE_MS: Final = 30000
# Exit codes a restart cannot cure: a bad setting (2), another daemon on the database (3).
NO_RESTART_EXIT_CODES: Final = "2 3"
# Carried from the installing environment into the service's (what you run is what you install).
_NOT_CARRIED: Final = frozenset({"SCHEDULER_DB", "SCHEDULER_HOME"})
TOKEN_VARIABLE: Final = "OPENCLAW_GATEWAY_TOKEN"
REDACTED: Final = "<redacted>"


@dataclass(frozen=True)
class Inputs:
    """What the service will run: taken from the installing process (see :func:`inputs_from`)."""

    python: str
    db: Path
    home: Path
    user: str
    uid: int
    config_home: Path
    gateway_url: str
    token: str | None  # from OPENCLAW_GATEWAY_TOKEN; None: the token file is used in place
    token_path: Path
    settings: tuple[tuple[str, str], ...]  # other SCHEDULER_* variables, carried over
    grace_ms: int = DEFAULT_GRACE_MS


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    content: str
    mode: int
    display: str | None = None  # what --dry-run prints instead of content (a token redacted)

    def shown(self) -> str:
        return self.content if self.display is None else self.display


@dataclass(frozen=True)
class ServicePlan:
    manager: str  # "systemd" | "launchd"
    scope: str  # "user" | "system"
    service_file: ServiceFile  # the unit or the plist
    extra_files: tuple[ServiceFile, ...]  # the environment or token file
    install_commands: tuple[tuple[str, ...], ...]
    uninstall_commands: tuple[tuple[str, ...], ...]
    after_removal_commands: tuple[tuple[str, ...], ...]
    enabled_command: tuple[str, ...]
    active_command: tuple[str, ...]
    # Re-installing over the running service: restart it with the new files (systemd only).
    restart_command: tuple[str, ...] | None = None
    main_pid_command: tuple[str, ...] | None = None  # prints the pid of the service's daemon

    @property
    def files(self) -> tuple[ServiceFile, ...]:
        return (*self.extra_files, self.service_file)


def inputs_from(environ: Mapping[str, str], *, python: str, db: Path, user: str, uid: int) -> Inputs:
    home = Path(environ.get("HOME") or Path.home())
    config = environ.get("XDG_CONFIG_HOME", "").strip()
    token = environ.get(TOKEN_VARIABLE, "").strip() or None
    token_path = Path(environ.get("OPENCLAW_GATEWAY_TOKEN_PATH", "").strip() or DEFAULT_TOKEN_PATH)
    carried = tuple(sorted(
        (name, value) for name, value in environ.items()
        if name.startswith("SCHEDULER_") and not name.startswith("SCHEDULER_TEST_")
        and name not in _NOT_CARRIED and value != ""
    ))
    grace = dict(carried).get("SCHEDULER_SHUTDOWN_GRACE_MS", "")
    return Inputs(
        python=python, db=db.expanduser().absolute(), home=home, user=user, uid=uid,
        config_home=Path(config) if config else home / ".config",
        gateway_url=environ.get("OPENCLAW_GATEWAY_URL", "").strip() or DEFAULT_GATEWAY_URL,
        token=token, token_path=_expand_home(token_path, home), settings=carried,
        grace_ms=int(grace) if grace.isdigit() else DEFAULT_GRACE_MS,
    )


def plan(manager: str, *, system: bool, inputs: Inputs) -> ServicePlan:
    if manager == "systemd":
        return _systemd_plan(system, inputs)
    if manager == "launchd":
        return _launchd_plan(system, inputs)
    raise ValidationError(f"unknown service manager {manager!r}; expected systemd or launchd")


def default_manager(platform: str) -> str:
    return "launchd" if platform == "darwin" else "systemd"


# -- systemd ---------------------------------------------------------------------------------


def systemd_unit_path(system: bool, inputs: Inputs) -> Path:
    if system:
        return Path("/etc/systemd/system") / UNIT_NAME
    return inputs.config_home / "systemd" / "user" / UNIT_NAME


def _systemd_plan(system: bool, inputs: Inputs) -> ServicePlan:
    env_dir = Path("/etc/openclaw-scheduler") if system else inputs.config_home / "openclaw-scheduler"
    content = _environment_file(inputs)
    shown = re.sub(rf"^({TOKEN_VARIABLE}=).*$", rf"\g<1>{REDACTED}", content, flags=re.M)
    env_file = ServiceFile(env_dir / "scheduler.env", content, 0o600, display=shown)
    unit = ServiceFile(systemd_unit_path(system, inputs), systemd_unit(system, inputs, env_file.path),
                       0o644 if system else 0o600)
    ctl = ("systemctl",) if system else ("systemctl", "--user")
    return ServicePlan(
        manager="systemd", scope="system" if system else "user", service_file=unit,
        extra_files=(env_file,),
        install_commands=((*ctl, "daemon-reload"), (*ctl, "enable", "--now", UNIT_NAME)),
        uninstall_commands=((*ctl, "disable", "--now", UNIT_NAME),),
        after_removal_commands=((*ctl, "daemon-reload"),),
        enabled_command=(*ctl, "is-enabled", UNIT_NAME),
        active_command=(*ctl, "is-active", UNIT_NAME),
        restart_command=(*ctl, "restart", UNIT_NAME),
        main_pid_command=(*ctl, "show", "--property=MainPID", "--value", UNIT_NAME),
    )


def systemd_unit(system: bool, inputs: Inputs, env_file: Path) -> str:
    stop_s = inputs.grace_ms // 1000 + STOP_MARGIN_S
    lines = [
        "# Written by `openclaw-scheduler service install`. The gateway token is in the",
        "# EnvironmentFile (mode 0600), never here.",
        "[Unit]",
        "Description=OpenClaw scheduler",
        # A user manager has no network-online.target to wait for.
        *(["After=network-online.target", "Wants=network-online.target"] if system else []),
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_unit_word(inputs.python)} -P -m scheduler",
        # "-": the daemon creates the directory at its first start (0700); no failure before that.
        f"WorkingDirectory=-{_unit_path(inputs.db.parent)}",
        f"Environment={_unit_word('SCHEDULER_DB=' + str(inputs.db))}",
        f"EnvironmentFile={_unit_path(env_file)}",
        *([f"User={inputs.user}"] if system else []),
        f"WatchdogSec={WATCHDOG_S}",
        "Restart=on-failure",
        f"RestartSec={RESTART_S}",
        f"RestartPreventExitStatus={NO_RESTART_EXIT_CODES}",
        # SIGTERM to the daemon alone: it lets running jobs finish within its grace period.
        "KillMode=mixed",
        f"TimeoutStopSec={stop_s}",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=openclaw-scheduler",
        # Hardening that leaves the jobs' view of the file system alone (they are the user's work).
        "NoNewPrivileges=yes",
        "UMask=0077",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


def _environment_file(inputs: Inputs) -> str:
    pairs = [("OPENCLAW_GATEWAY_URL", inputs.gateway_url)]
    if inputs.token is not None:
        pairs.append((TOKEN_VARIABLE, inputs.token))
    else:
        pairs.append(("OPENCLAW_GATEWAY_TOKEN_PATH", str(inputs.token_path)))
    pairs.extend(inputs.settings)
    lines = ["# Written by `openclaw-scheduler service install` (mode 0600): the service's settings."]
    lines.extend(f"{name}={_env_value(name, value)}" for name, value in pairs)
    return "\n".join(lines) + "\n"


def _env_value(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValidationError(f"{name} holds a line break; a service environment cannot carry it")
    if "'" not in value:  # single quotes: taken literally (no escapes, no $ expansion)
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _unit_path(path: Path) -> str:
    """A path setting takes the rest of the line as it is (no quotes), but resolves specifiers."""
    text = str(path)
    if "\n" in text:
        raise ValidationError(f"{text!r}: a path with a line break cannot go in a unit file")
    return text.replace("%", "%%")


def _unit_word(value: str) -> str:
    """A unit-file value: ``%`` starts a specifier and ``$`` a variable; spaces need quotes."""
    escaped = value.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\]', escaped):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


# -- launchd ---------------------------------------------------------------------------------


def launchd_plist_path(system: bool, inputs: Inputs) -> Path:
    if system:
        return Path("/Library/LaunchDaemons") / f"{LAUNCHD_LABEL}.plist"
    return inputs.home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def _launchd_plan(system: bool, inputs: Inputs) -> ServicePlan:
    extra: tuple[ServiceFile, ...] = ()
    token_path = inputs.token_path
    if inputs.token is not None:  # launchd has no environment file: the token goes in a file
        token_path = inputs.db.parent / "gateway-token"
        extra = (ServiceFile(token_path, inputs.token + "\n", 0o600, display=REDACTED + "\n"),)
    plist = ServiceFile(launchd_plist_path(system, inputs), launchd_plist(system, inputs, token_path),
                        0o644)
    domain = "system" if system else f"gui/{inputs.uid}"
    return ServicePlan(
        manager="launchd", scope="system" if system else "user", service_file=plist,
        extra_files=extra,
        install_commands=(("launchctl", "bootstrap", domain, str(plist.path)),),
        uninstall_commands=(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"),),
        after_removal_commands=(),
        enabled_command=("launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"),
        active_command=("launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"),
    )


def launchd_plist(system: bool, inputs: Inputs, token_path: Path) -> str:
    env = {
        "SCHEDULER_DB": str(inputs.db),
        "OPENCLAW_GATEWAY_URL": inputs.gateway_url,
        "OPENCLAW_GATEWAY_TOKEN_PATH": str(token_path),
        "HOME": str(inputs.home),
        "PATH": "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin",
        **dict(inputs.settings),
    }
    log = str(inputs.db.parent / "scheduler.log")
    document: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [inputs.python, "-P", "-m", "scheduler"],
        "EnvironmentVariables": env,
        # The home always exists (the database directory may not yet); -P keeps it off sys.path.
        "WorkingDirectory": str(inputs.home),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a failure, not after a clean stop
        "ThrottleInterval": 30,
        "ExitTimeOut": inputs.grace_ms // 1000 + STOP_MARGIN_S,
        "ProcessType": "Background",
        "Umask": 0o077,
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    if system:
        document["UserName"] = inputs.user
    # Spaces, not plistlib's tabs: the same document, and readable when printed by --dry-run.
    return plistlib.dumps(document, sort_keys=False).decode().replace("\t", "  ")


# -- other installations ---------------------------------------------------------------------


def service_files_for_database(db: Path, inputs: Inputs, *, skip: Path) -> list[Path]:
    """Installed units and plists (user and system) that run a scheduler on ``db``, but ``skip``."""
    found = []
    for path in _installed_candidates(inputs):
        if path == skip or not path.is_file():
            continue
        try:
            named = _database_named_in(path, inputs.home)
        except (OSError, ValueError, plistlib.InvalidFileException):
            continue
        if named is not None and named == db:
            found.append(path)
    return found


def installed_service_files(inputs: Inputs) -> list[Path]:
    """Every installed unit or plist of ours (user and system), whatever database it runs."""
    return [path for path in _installed_candidates(inputs) if path.is_file()]


def _installed_candidates(inputs: Inputs) -> list[Path]:
    dirs = [inputs.config_home / "systemd" / "user", Path("/etc/systemd/system"),
            inputs.home / "Library" / "LaunchAgents", Path("/Library/LaunchDaemons")]
    found: list[Path] = []
    for directory in dirs:
        try:
            found.extend(sorted(p for p in directory.iterdir()
                                if "openclaw" in p.name and p.suffix in (".service", ".plist")))
        except OSError:
            continue
    return found


def _database_named_in(path: Path, home: Path) -> Path | None:
    if path.suffix == ".plist":
        document = plistlib.loads(path.read_bytes())
        value = document.get("EnvironmentVariables", {}).get("SCHEDULER_DB")
        return None if not value else _expand_home(Path(value), home).absolute()
    for line in path.read_text(errors="replace").splitlines():
        if line.strip().startswith("Environment"):
            for word in shlex.split(line.split("=", 1)[1], posix=True):
                if word.startswith("SCHEDULER_DB="):
                    value = _resolve_specifiers(word.split("=", 1)[1], home)
                    return _expand_home(Path(value), home).absolute()
    return None


def _resolve_specifiers(value: str, home: Path) -> str:
    """``%%`` and ``%h`` (the reference's unit uses it), in one pass: ``%%h`` is a literal ``%h``."""
    return re.sub(r"%[%h]", lambda m: "%" if m.group() == "%%" else str(home), value)


def _expand_home(path: Path, home: Path) -> Path:
    text = str(path)
    if text == "~" or text.startswith("~/"):
        return home / text[2:]
    return path.expanduser()


def quoted_command(command: tuple[str, ...]) -> str:
    return shlex.join(command)
