"""The secret scrub of a shell job's environment: what is dropped, what is kept, and the allow-list."""

from __future__ import annotations

import pytest

from conftest import shell_job
from scheduler.strategies.shell_env import (
    is_secret_name,
    is_secret_value,
    name_words,
    scrubbed_environment,
)

DROPPED_NAMES = [
    "OPENCLAW_GATEWAY_TOKEN", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "db_password", "FOO_API_KEY",
    "PGPASSWORD", "PGPASSFILE", "MYSQL_PWD", "DB_PASS", "SMTP_PASSWD", "GPG_PASSPHRASE",
    "GOOGLE_APPLICATION_CREDENTIALS", "AWS_CREDS", "DOCKER_CRED", "NPM_AUTH", "npm_config__auth",
    "OAUTH_CLIENT", "BASIC-AUTH", "SESSION_COOKIE", "GH_PRIVATE", "API_JWT", "BEARER",
    "SLACK_WEBHOOK_URL", "dbPass", "ldap.pw", "ADMIN_PW2",
]
KEPT_NAMES = [
    "PATH", "HOME", "PWD", "OLDPWD", "SSH_AUTH_SOCK", "USER", "LANG", "TERM", "SHELL",
    "BYPASS_CACHE", "PASSENGER_APP_ENV", "COMPASS_HOME", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
    "SSH_ASKPASS", "XAUTHORITY", "DBUS_SESSION_BUS_ADDRESS", "XDG_SESSION_TYPE", "HTTP_PROXY",
    "SSL_CERT_FILE", "DATABASE_URL", "PYTHONPATH", "AUTHOR",
]


@pytest.mark.parametrize("name", DROPPED_NAMES)
def test_secret_looking_names_are_dropped(name: str) -> None:
    assert is_secret_name(name)
    assert scrubbed_environment({name: "plain", "PATH": "/bin"}) == {"PATH": "/bin"}


@pytest.mark.parametrize("name", KEPT_NAMES)
def test_ordinary_names_are_kept(name: str) -> None:
    assert not is_secret_name(name)
    assert scrubbed_environment({name: "plain"}) == {name: "plain"}


@pytest.mark.parametrize("value", [
    "postgresql://app:s3cret@db.internal:5432/app",
    "redis://:hunter2@cache:6379/0",
    "http://proxyuser:proxypass@proxy:3128",
    "mongodb+srv://u:p%40ss@cluster0.example.net/?retryWrites=true",
    "Server=db;Database=app;User Id=app;Password=s3cret;",
    "jdbc:postgresql://db/app?user=app&password=s3cret",
    "DRIVER={x};UID=app;PWD=s3cret",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----",
])
def test_values_holding_credentials_are_dropped(value: str) -> None:
    assert is_secret_value(value)
    assert scrubbed_environment({"DATABASE_URL": value, "PATH": "/bin"}) == {"PATH": "/bin"}


@pytest.mark.parametrize("value", [
    "postgresql://db.internal:5432/app",
    "ssh://git@github.com/org/repo.git",
    "git@github.com:org/repo.git",
    "http://[::1]:8080/path",
    "https://example.com/a@b",
    "/usr/local/bin:/usr/bin:/bin",
    "-o PasswordAuthentication=no -o StrictHostKeyChecking=no",
    "user:@host",
])
def test_ordinary_values_are_kept(value: str) -> None:
    assert not is_secret_value(value)
    assert scrubbed_environment({"SOME_SETTING": value}) == {"SOME_SETTING": value}


def test_the_allow_list_passes_names_and_values_but_never_the_gateway_token() -> None:
    token = "gw-token-0123456789"
    environ = {
        "OPENCLAW_GATEWAY_TOKEN": token,
        "DATABASE_URL": "postgresql://app:s3cret@db/app",
        "DEPLOY_TOKEN": "deploy",
        "AUTH_HEADER": f"Bearer {token}",  # allowed, but it holds the gateway token
        "COPY": f"x{token}y",  # not secret-looking at all, but holds the gateway token
        "PATH": "/bin",
    }
    allow = ["DATABASE_URL", "DEPLOY_TOKEN", "AUTH_HEADER", "OPENCLAW_GATEWAY_TOKEN"]
    assert scrubbed_environment(environ, allow) == {
        "DATABASE_URL": "postgresql://app:s3cret@db/app", "DEPLOY_TOKEN": "deploy", "PATH": "/bin",
    }
    assert scrubbed_environment(environ) == {"PATH": "/bin"}


def test_name_words_split_at_separators_digits_and_case_changes() -> None:
    assert name_words("dbPass_2x-HOST.name") == ["DB", "PASS", "X", "HOST", "NAME"]
    assert name_words("OAuthToken") == ["OAUTH", "TOKEN"]


def test_the_daemon_keeps_credentials_out_of_shell_jobs(cli, daemon, db, tmp_path) -> None:
    out = tmp_path / "env.txt"
    d = daemon({
        "DATABASE_URL": "postgresql://app:db-pw-4711@db.internal/app",
        "PGPASSFILE": "/home/me/.pgpass",
        "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/key.json",
        "MYSQL_PWD": "mysql-pw-0815",
        "PLAIN_DB_HOST": "db.internal",
        "BYPASS_CACHE": "1",
    })
    code, job, stdout, stderr = cli("jobs", "add", shell_job(
        name="env dump", schedule_cron="0 0 1 1 *", run_now=True, payload_message=f"env > {out}"))
    assert code == 0, stdout + stderr
    d.wait_for_event("run.finished", lambda e: e["job_id"] == job["job"]["id"], timeout=15)
    seen = out.read_text()
    for needle in ("DATABASE_URL", "db-pw-4711", "PGPASSFILE", "GOOGLE_APPLICATION_CREDENTIALS",
                   "MYSQL_PWD", "mysql-pw-0815"):
        assert needle not in seen, needle
    assert "PLAIN_DB_HOST=db.internal" in seen.splitlines()
    assert "BYPASS_CACHE=1" in seen.splitlines()
    assert d.stop() == 0
