"""``python deny_unshare.py CMD ARGS...``: run CMD where ``unshare(2)`` fails with EPERM.

A seccomp filter (inherited by every descendant) makes the host look like one without the
privilege or the user namespaces a network namespace needs, so the scheduler's refusal can be
tested for real. Linux x86-64 and aarch64 only; ``supported()`` says whether this host is one.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

UNSHARE_NR = {"x86_64": 272, "aarch64": 97}
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06


def supported() -> bool:
    return sys.platform.startswith("linux") and platform.machine() in UNSHARE_NR


def _instruction(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def deny_unshare() -> None:
    number = UNSHARE_NR[platform.machine()]
    code = b"".join([
        _instruction(BPF_LD_W_ABS, 0, 0, 0),  # the syscall number (seccomp_data.nr)
        _instruction(BPF_JEQ_K, 0, 1, number),
        _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM),
        _instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ])
    buffer = ctypes.create_string_buffer(code, len(code))
    program = _Program(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(program), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


if __name__ == "__main__":
    deny_unshare()
    os.execvp(sys.argv[1], sys.argv[1:])
