"""Run a command with no network: a new network namespace holding only the loopback interface.

Started by the shell strategy as ``python -I -S netns_exec.py [--unset-lc-ctype] SHELL -c CMD``
for a job with ``contract_network: "none"``; it enters the namespace, then ``exec``s the shell, so
the shell keeps this process's pid, session and process group (the run's kill handling is
unchanged). ``--probe`` instead exits 0 once the namespace is set up (``capabilities``).

It is a standalone script on purpose (standard library only, no ``scheduler`` import): started
with ``-I -S`` it does not read the job's ``PYTHON*`` variables or site-packages, and it needs no
``preexec_fn`` (unsafe in the threaded daemon) and no util-linux/iproute2 of a given version.

How the namespace is made:

* ``unshare(CLONE_NEWNET)`` when the daemon may (root, or ``CAP_SYS_ADMIN``);
* else ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` with the caller's own uid and gid mapped onto
  themselves, so the command runs as the same user (not as a mapped root) with the same file
  access; this needs unprivileged user namespaces;
* then ``lo`` is brought up, as a container runtime's ``--network none`` does: the command and its
  own children may talk over loopback, which is a different loopback from the host's.

Anything that fails refuses: a line starting with ``REFUSAL_PREFIX`` on stderr and exit status
``REFUSED_EXIT``, before the command is started. The command never runs with the host's network.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import sys

REFUSED_EXIT = 125
REFUSAL_PREFIX = "scheduler-netns-refused: "
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


class Refused(Exception):
    """The namespace could not be set up; the reason is the message."""


def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _enter_namespace() -> None:
    if not sys.platform.startswith("linux"):
        raise Refused(f"network namespaces are Linux-only (platform {sys.platform})")
    try:
        _unshare(CLONE_NEWNET)
        return
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES):
            raise Refused(f"unshare(CLONE_NEWNET) failed: {exc.strerror}") from None
    uid, gid = os.geteuid(), os.getegid()
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNET)
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise Refused("no privilege for a network namespace and no unprivileged user namespace "
                      f"({exc.strerror})") from None


def _loopback_up() -> None:
    request = struct.pack("16sh", b"lo", 0)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            flags = struct.unpack("16sh", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))
    except OSError as exc:
        raise Refused(f"cannot bring up loopback in the namespace: {exc.strerror}") from None


def isolate() -> None:
    """Enter a fresh network namespace with only ``lo``, up. Raises :class:`Refused`."""
    _enter_namespace()
    _loopback_up()


def main(argv: list[str]) -> int:
    probe = argv[:1] == ["--probe"]
    unset_lc_ctype = argv[:1] == ["--unset-lc-ctype"]
    command = argv[1:] if probe or unset_lc_ctype else argv
    if not probe and not command:
        sys.stderr.write(f"{REFUSAL_PREFIX}no command given\n")
        return REFUSED_EXIT
    try:
        isolate()
    except Refused as exc:
        sys.stderr.write(f"{REFUSAL_PREFIX}{exc}\n")
        return REFUSED_EXIT
    if probe:
        return 0
    env = dict(os.environ)
    if unset_lc_ctype:  # set by this interpreter's locale coercion, not by the job (PEP 538)
        env.pop("LC_CTYPE", None)
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        sys.stderr.write(f"Cannot start shell {command[0]}: {exc.strerror}\n")
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
