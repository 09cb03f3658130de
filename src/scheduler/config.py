"""Daemon settings from the environment, validated once at start.

Names and defaults are the reference's (``SCHEDULER_*``, ``OPENCLAW_GATEWAY_*``) plus our own.
An unusable value stops the daemon with one line naming the variable. Only the daemon imports
this module: pydantic-settings costs a third of a second, which the CLI cannot afford.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from scheduler import paths
from scheduler.errors import ConfigError
from scheduler.logs import redact_url
from scheduler.models.retention import (
    APPROVALS_KEEP_DAYS,
    RUNS_KEEP_DAYS,
    RUNS_KEEP_PER_JOB,
    RetentionPolicy,
)
from scheduler.strategies.shell import default_shell


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="ignore", populate_by_name=False, case_sensitive=True
    )

    gateway_url: str = Field("http://127.0.0.1:18789", validation_alias="OPENCLAW_GATEWAY_URL")
    gateway_token: SecretStr | None = Field(None, validation_alias="OPENCLAW_GATEWAY_TOKEN")
    gateway_token_path: Path = Field(
        Path("~/.openclaw/credentials/.gateway-token"), validation_alias="OPENCLAW_GATEWAY_TOKEN_PATH"
    )
    home: Path | None = Field(None, validation_alias="SCHEDULER_HOME")
    db: str | None = Field(None, validation_alias="SCHEDULER_DB")  # a path, or a postgresql:// URL
    artifacts_dir: Path | None = Field(None, validation_alias="SCHEDULER_ARTIFACTS_DIR")
    tick_ms: int = Field(10000, ge=1000, validation_alias="SCHEDULER_TICK_MS")
    stale_threshold_s: int = Field(90, ge=10, validation_alias="SCHEDULER_STALE_THRESHOLD_S")
    heartbeat_check_ms: int = Field(30000, ge=5000, validation_alias="SCHEDULER_HEARTBEAT_CHECK_MS")
    message_delivery_ms: int = Field(15000, ge=5000, validation_alias="SCHEDULER_MESSAGE_DELIVERY_MS")
    prune_ms: int = Field(3600000, ge=60000, validation_alias="SCHEDULER_PRUNE_MS")
    # Retention (models/retention.py holds the names, defaults and bounds the CLI reads too).
    runs_keep_per_job: int = Field(RUNS_KEEP_PER_JOB[1], ge=RUNS_KEEP_PER_JOB[2],
                                   le=RUNS_KEEP_PER_JOB[3], validation_alias=RUNS_KEEP_PER_JOB[0])
    runs_keep_days: int = Field(RUNS_KEEP_DAYS[1], ge=RUNS_KEEP_DAYS[2], le=RUNS_KEEP_DAYS[3],
                                validation_alias=RUNS_KEEP_DAYS[0])
    approvals_keep_days: int = Field(APPROVALS_KEEP_DAYS[1], ge=APPROVALS_KEEP_DAYS[2],
                                     le=APPROVALS_KEEP_DAYS[3], validation_alias=APPROVALS_KEEP_DAYS[0])
    shell: str = Field(default_factory=default_shell, validation_alias="SCHEDULER_SHELL")
    # Trust provider plugins (docs/trust.md): a directory of *.py modules, absolute (a relative
    # one would load code from wherever the daemon was started), and the bound of each call.
    provider_path: Path | None = Field(None, validation_alias="SCHEDULER_PROVIDER_PATH")
    provider_timeout_ms: int = Field(10000, ge=100, le=600000,
                                     validation_alias="SCHEDULER_PROVIDER_TIMEOUT_MS")
    # contract_network none shell jobs: "auto" runs them in a network namespace (refused where
    # none can be made); "off" refuses them all (a host whose policy forbids namespaces).
    network_isolation: Literal["auto", "off"] = Field("auto", validation_alias="SCHEDULER_NETWORK_ISOLATION")
    debug: bool = Field(False, validation_alias="SCHEDULER_DEBUG")
    max_concurrency: int = Field(64, ge=1, le=10000, validation_alias="SCHEDULER_MAX_CONCURRENCY")
    # Per stream of one shell run: bytes kept in its artifact file; the rest is counted, noted, dropped.
    max_output_bytes: int = Field(1024**3, ge=1, le=2**62, validation_alias="SCHEDULER_MAX_OUTPUT_BYTES")
    shell_env_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias="SCHEDULER_SHELL_ENV_ALLOW"
    )
    # Directories whose files [IMAGE:/path] markers may attach (os.pathsep-separated, absolute);
    # empty: the system temp directory and the artifacts directory.
    media_dirs: Annotated[tuple[Path, ...], NoDecode] = Field((), validation_alias="SCHEDULER_MEDIA_DIRS")
    shutdown_grace_ms: int = Field(30000, ge=0, validation_alias="SCHEDULER_SHUTDOWN_GRACE_MS")
    wake_poll_ms: int = Field(200, ge=10, le=10000, validation_alias="SCHEDULER_WAKE_POLL_MS")
    run_heartbeat_ms: int = Field(10000, ge=1000, validation_alias="SCHEDULER_RUN_HEARTBEAT_MS")
    # How long a run stays its owner's without a heartbeat before another instance may recover it.
    lease_s: int = Field(30, ge=5, le=3600, validation_alias="SCHEDULER_LEASE_S")
    # The fleet (models/placement.py; docs/multi-host.md): the host name this instance goes by
    # (default: the machine's), and its labels; jobs placed "host:<name>" / "label:<label>".
    host_name: str | None = Field(None, validation_alias="SCHEDULER_HOST_NAME")
    instance_labels: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias="SCHEDULER_INSTANCE_LABELS"
    )
    # At most an hour: the ladder doubles up to 20 times (max_retries), and must stay a date.
    retry_base_ms: int = Field(30000, ge=100, le=3_600_000, validation_alias="SCHEDULER_RETRY_BASE_MS")
    # The dispatch watcher (strategies/dispatch_watch.py; docs/dispatch.md "The watcher"): how
    # long one wait on the gateway run lasts, how long a session may show no activity before it
    # counts as stuck, the base of the overload/restart retry backoff (retry n waits n x base),
    # and the margin added to the label's timeout for its first deadline. The reference's values
    # are the defaults; tests make them small.
    dispatch_poll_ms: int = Field(20000, ge=100, le=600_000, validation_alias="SCHEDULER_DISPATCH_POLL_MS")
    dispatch_stuck_ms: int = Field(180_000, ge=500, le=86_400_000,
                                   validation_alias="SCHEDULER_DISPATCH_STUCK_MS")
    dispatch_retry_base_ms: int = Field(30000, ge=100, le=3_600_000,
                                        validation_alias="SCHEDULER_DISPATCH_RETRY_BASE_MS")
    dispatch_deadline_margin_ms: int = Field(120_000, ge=0, le=86_400_000,
                                             validation_alias="SCHEDULER_DISPATCH_DEADLINE_MARGIN_MS")
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        "FULL", validation_alias="SCHEDULER_SQLITE_SYNCHRONOUS"
    )
    # Periodic backups (docs/operating.md, "Back up"): the reference's names and defaults.
    backup: bool = Field(False, validation_alias="SCHEDULER_BACKUP")
    backup_ms: int = Field(300000, ge=60000, le=7 * 86_400_000, validation_alias="SCHEDULER_BACKUP_MS")
    backup_dir: Path | None = Field(None, validation_alias="SCHEDULER_BACKUP_DIR")
    backup_snapshot_hours: int = Field(
        24, ge=1, le=24 * 366, validation_alias="SCHEDULER_BACKUP_SNAPSHOT_RETENTION_HOURS"
    )
    backup_rollup_days: int = Field(
        7, ge=1, le=3660, validation_alias="SCHEDULER_BACKUP_ROLLUP_RETENTION_DAYS"
    )
    # Upload of each snapshot and rollup to S3-compatible storage (the extra [s3]: boto3).
    backup_s3: bool = Field(False, validation_alias="SCHEDULER_BACKUP_S3")
    backup_s3_endpoint: str | None = Field(None, validation_alias="SCHEDULER_BACKUP_S3_ENDPOINT")
    backup_bucket: str = Field("scheduler-backups", min_length=3, max_length=63,
                               validation_alias="SCHEDULER_BACKUP_BUCKET")
    backup_prefix: str = Field("scheduler", max_length=512, validation_alias="SCHEDULER_BACKUP_PREFIX")
    # The standard AWS variables, read here because the daemon clears secret-looking variables
    # from its environment at start (engine/hardening.py), before boto3 would look for them.
    aws_access_key_id: SecretStr | None = Field(None, validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(None, validation_alias="AWS_SECRET_ACCESS_KEY")
    aws_session_token: SecretStr | None = Field(None, validation_alias="AWS_SESSION_TOKEN")
    # A non-loopback SCHEDULER_HTTP_ADDR is refused unless this is set (the endpoint has no auth).
    # Declared before it: its validator reads this one.
    http_allow_remote: bool = Field(False, validation_alias="SCHEDULER_HTTP_ALLOW_REMOTE")
    # The metrics and health endpoint, host:port; empty: no endpoint (engine/http_endpoint.py).
    http_addr: str | None = Field(None, validation_alias="SCHEDULER_HTTP_ADDR")
    # The stuck-run detector as a daemon task (engine/stuck_runs.py; docs/operating.md, "Stuck
    # runs"): every this many seconds, 0 = off (the default, as the reference's script is opt-in).
    stuck_run_check_s: int = Field(0, ge=0, le=86_400, validation_alias="SCHEDULER_STUCK_RUN_CHECK_S")
    # Runs started longer ago than this are looked at (the reference's --threshold-min 45).
    stuck_run_threshold_s: int = Field(2700, ge=1, le=7 * 86_400,
                                       validation_alias="SCHEDULER_STUCK_RUN_THRESHOLD_S")
    # Where its alerts go, as outbound messages; without a target they are only logged.
    stuck_run_alert_channel: str = Field("telegram", min_length=1, max_length=64,
                                         validation_alias="SCHEDULER_STUCK_RUN_ALERT_CHANNEL")
    stuck_run_alert_to: str | None = Field(None, min_length=1, max_length=256,
                                           validation_alias="SCHEDULER_STUCK_RUN_ALERT_TO")
    # Dispatch lifecycle events are also POSTed here (engine/dispatch_events.py); a secret: the
    # URL may carry credentials.
    dispatch_webhook_url: SecretStr | None = Field(None, validation_alias="DISPATCH_WEBHOOK_URL")

    @field_validator("debug", mode="before")
    @classmethod
    def _any_set_value_enables(cls, value: Any) -> bool:
        # The reference turns debug on for any value; "0"/"false"/"no" read as off here.
        return str(value).strip().lower() not in ("", "0", "false", "no", "off")

    @field_validator("backup_s3")
    @classmethod
    def _client_installed(cls, value: bool) -> bool:
        import importlib.util

        if value and importlib.util.find_spec("boto3") is None:
            raise ValueError("S3 upload needs boto3: pip install 'openclaw-scheduler[s3]'")
        return value

    @field_validator("backup", "backup_s3", mode="before")
    @classmethod
    def _one_or_true(cls, value: Any) -> bool:
        # The reference enables backups for "1" and "true" only; anything else leaves them off.
        return str(value).strip().lower() in ("1", "true")

    @field_validator("shell_env_allow", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return tuple(value)

    @field_validator("host_name", mode="before")
    @classmethod
    def _host_name(cls, value: Any) -> str | None:
        from scheduler.models.placement import check_host_name

        if value is None or not str(value).strip():
            return None
        return check_host_name(str(value))

    @field_validator("instance_labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> tuple[str, ...]:
        from scheduler.models.placement import parse_labels

        return parse_labels(value if isinstance(value, str) else ",".join(value))

    @field_validator("provider_path", mode="before")
    @classmethod
    def _absolute_directory(cls, value: Any) -> Path | None:
        if value is None or not str(value).strip():
            return None
        path = Path(str(value).strip()).expanduser()
        if not path.is_absolute():
            raise ValueError("must be an absolute path")
        return path

    @field_validator("media_dirs", mode="before")
    @classmethod
    def _directory_list(cls, value: Any) -> tuple[Path, ...]:
        parts = value.split(os.pathsep) if isinstance(value, str) else list(value)
        dirs = tuple(Path(str(part).strip()).expanduser() for part in parts if str(part).strip())
        relative = [str(d) for d in dirs if not d.is_absolute()]
        if relative:
            raise ValueError(f"directories must be absolute paths, got {relative[0]!r}")
        return dirs

    @field_validator("http_allow_remote", mode="before")
    @classmethod
    def _yes(cls, value: Any) -> bool:
        return str(value).strip().lower() in ("1", "true", "yes", "on")

    @field_validator("http_addr", mode="after")
    @classmethod
    def _endpoint_on_loopback(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        host, _ = parse_http_addr(value)
        if not info.data.get("http_allow_remote") and not is_loopback(host):
            raise ValueError(
                "not a loopback address, and the endpoint has no authentication: use "
                "127.0.0.1:<port>, or set SCHEDULER_HTTP_ALLOW_REMOTE=1")
        return value

    @field_validator("dispatch_webhook_url", mode="after")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        from scheduler.gateway.webhook import check_webhook_url

        return None if value is None else SecretStr(check_webhook_url(value.get_secret_value()))

    @field_validator("lease_s", mode="after")
    @classmethod
    def _lease_outlives_heartbeats(cls, value: int, info: ValidationInfo) -> int:
        heartbeat_ms = info.data.get("run_heartbeat_ms")
        if isinstance(heartbeat_ms, int) and heartbeat_ms >= value * 1000:
            raise ValueError(
                f"must be longer than SCHEDULER_RUN_HEARTBEAT_MS ({heartbeat_ms} ms), which extends "
                "it: a lease that expires between heartbeats lets another instance take over live "
                "runs; keep the heartbeat at most a third of the lease")
        return value

    @field_validator("db")
    @classmethod
    def _a_database(cls, value: str | None) -> str | None:
        problem = paths.db_setting_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def db_path(self) -> Path:
        env = {}
        if self.home is not None:
            env["SCHEDULER_HOME"] = str(self.home)
        if self.db is not None:
            env["SCHEDULER_DB"] = str(self.db)
        return paths.db_path(env) if env else paths.db_path()

    @property
    def db_url(self) -> str | None:
        """The PostgreSQL URL when SCHEDULER_DB is one (several daemons share it)."""
        return paths.db_url({"SCHEDULER_DB": self.db}) if self.db else None

    @property
    def db_target(self) -> Path | str:
        return self.db_url or self.db_path

    @property
    def db_label(self) -> str:
        """The database, as logs and messages name it (a URL without its password)."""
        from scheduler.store import shown_location

        return shown_location(str(self.db_target))

    @property
    def backup_path(self) -> Path:
        if self.backup_dir is not None:
            return self.backup_dir.expanduser()
        home = self.home.expanduser() if self.home is not None else paths.scheduler_home()
        return home / "backups"

    @property
    def artifacts_path(self) -> Path:
        if self.artifacts_dir is not None:
            return self.artifacts_dir.expanduser()
        return self.db_path.parent / "artifacts"

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(self.runs_keep_per_job, self.runs_keep_days, self.approvals_keep_days)


def parse_http_addr(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` as (host, port); ValueError saying what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError("must be host:port, such as 127.0.0.1:9464")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """A literal loopback address or ``localhost`` (names are not resolved: a resolver could
    answer anything)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise ``ConfigError`` naming the first bad variable."""
    try:
        if env is None:
            return Settings()
        return Settings(**_from_mapping(env))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error.get("loc") else "environment"
        # A URL's user:password part is never echoed (DISPATCH_WEBHOOK_URL may carry one).
        shown = "" if "TOKEN" in name else f" (got {redact_url(repr(error.get('input')))})"
        raise ConfigError(f"{name}: {error['msg']}{shown}") from None


def _from_mapping(env: dict[str, str]) -> dict[str, Any]:
    """Settings(**kwargs) takes aliases; keep only the variables we know and drop empty ones."""
    known = {
        str(field.validation_alias)
        for field in Settings.model_fields.values()
        if field.validation_alias is not None
    }
    return {k: v for k, v in env.items() if k in known and v != ""}
