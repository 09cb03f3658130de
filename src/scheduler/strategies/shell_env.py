"""The environment a shell job gets: the daemon's, minus anything that looks like a secret.

A variable is dropped when (docs/operating.md has the same rule for operators):

* it is ``OPENCLAW_GATEWAY_TOKEN``, or its value contains that token's value;
* its upper-cased name contains one of :data:`SECRET_NAME_PARTS` anywhere (``DB_PASSWORD``,
  ``GOOGLE_APPLICATION_CREDENTIALS``, ``PGPASSFILE``, ``MONKEY`` too: a false alarm costs less than
  a leak);
* one of the words of its name is in :data:`SECRET_NAME_WORDS` (words are split at ``_``, ``-``,
  ``.``, digits and lower-to-upper case changes: ``MYSQL_PWD``, ``NPM_AUTH``, ``dbPass``), except
  the exact names in :data:`KEPT_NAMES` (``PWD`` is the working directory; an agent socket path
  grants nothing that the job, running as the same user, could not find itself). Words and not
  substrings, so ``BYPASS_CACHE``, ``PASSENGER_ENV``, ``GIT_AUTHOR_NAME`` and ``SSH_ASKPASS`` stay;
* its value holds URL credentials, ``scheme://user:password@host`` (``DATABASE_URL``, a proxy URL
  with a password), a ``password=``/``pwd=``/``passwd=`` pair as in connection strings, or a PEM
  private key.

Names listed in ``allow`` (exact, case-sensitive: ``SCHEDULER_SHELL_ENV_ALLOW``) are kept whatever
their name or value, except the gateway token and a value containing it, which nothing passes on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

GATEWAY_TOKEN_VAR = "OPENCLAW_GATEWAY_TOKEN"
SECRET_NAME_PARTS = (
    "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "PGPASS", "CREDENTIAL", "PRIVATE",
    "COOKIE", "KEY",
)
SECRET_NAME_WORDS = frozenset({
    "PASS", "PW", "PWD", "AUTH", "OAUTH", "CRED", "CREDS", "JWT", "BEARER", "WEBHOOK",
})
KEPT_NAMES = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK"})
# A token shorter than this could occur inside an unrelated value by chance.
_MIN_TOKEN_MATCH = 8

_CASE_CHANGE = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NOT_LETTERS = re.compile(r"[^A-Z]+")
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*:[^\s/?#@]+@")
_PASSWORD_PAIR = re.compile(r"(?:^|[;&?,\s])(?:password|passwd|pwd)\s*=\s*[^\s;&]", re.IGNORECASE)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def name_words(name: str) -> list[str]:
    """``dbPass_2x-HOST`` → ``["DB", "PASS", "X", "HOST"]``."""
    return [word for word in _NOT_LETTERS.split(_CASE_CHANGE.sub("_", name).upper()) if word]


def is_secret_name(name: str) -> bool:
    if name == GATEWAY_TOKEN_VAR:
        return True
    if name in KEPT_NAMES:
        return False
    upper = name.upper()
    if any(part in upper for part in SECRET_NAME_PARTS):
        return True
    return any(word in SECRET_NAME_WORDS for word in name_words(name))


def is_secret_value(value: str) -> bool:
    return bool(_URL_CREDENTIALS.search(value) or _PASSWORD_PAIR.search(value)
                or _PRIVATE_KEY.search(value))


def scrubbed_environment(environ: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """Copy ``environ`` without the gateway token and the variables that look like secrets (the
    module docstring has the rule)."""
    allowed = frozenset(allow) - {GATEWAY_TOKEN_VAR}
    token = environ.get(GATEWAY_TOKEN_VAR, "")
    kept: dict[str, str] = {}
    for name, value in environ.items():
        if name == GATEWAY_TOKEN_VAR or (len(token) >= _MIN_TOKEN_MATCH and token in value):
            continue
        if name in allowed or not (is_secret_name(name) or is_secret_value(value)):
            kept[name] = value
    return kept
