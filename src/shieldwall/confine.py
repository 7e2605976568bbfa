"""Open a file confined beneath a directory at open time, closing the check-then-use race.

Linux ≥ 5.6 ``openat2(2)`` with ``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`` makes the
kernel refuse any resolution step that leaves the directory (``..`` above it, absolute
symlinks, symlinks pointing out, ``/proc/self/fd`` magic links) while it resolves — a
symlink swapped in after the policy check cannot redirect the open. Where ``openat2`` is
missing we walk the path component by component with ``O_NOFOLLOW`` (symlinks refused
outright), which is stricter but also race-free.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437, "arm64": 437}.get(platform.machine())


class ConfinementError(PermissionError):
    """The path leaves the directory, or is not allowed to be opened."""


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def _openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    assert _LIBC is not None and _SYS_OPENAT2 is not None
    how = struct.pack("QQQ", flags, mode, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    fd = _LIBC.syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), buf, ctypes.c_size_t(len(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _has_openat2() -> bool:
    if _LIBC is None or _SYS_OPENAT2 is None:
        return False
    try:
        fd = _openat2(-100, "/", os.O_RDONLY | os.O_DIRECTORY, 0, RESOLVE_NO_MAGICLINKS)
    except OSError as e:
        return e.errno not in (errno.ENOSYS, errno.EPERM)
    os.close(fd)
    return True


HAS_OPENAT2 = _has_openat2()


def open_beneath(root: str | os.PathLike[str], relpath: str, flags: int = os.O_RDONLY,
                 mode: int = 0o600) -> int:
    """Return a file descriptor for ``relpath`` opened beneath ``root``.

    Raises :class:`ConfinementError` when the path escapes ``root`` (including through
    symlinks), is absolute, or contains a NUL byte.
    """
    if "\x00" in relpath:
        raise ConfinementError("path contains a NUL byte")
    if os.path.isabs(relpath):
        raise ConfinementError("absolute paths are refused; give a path relative to the root")
    flags |= os.O_CLOEXEC
    if not flags & (os.O_CREAT | getattr(os, "O_TMPFILE", 0)):
        mode = 0  # openat2 refuses a mode without O_CREAT
    dirfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if HAS_OPENAT2:
            try:
                return _openat2(dirfd, relpath, flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
            except OSError as e:
                if e.errno == errno.EXDEV:
                    raise ConfinementError(f"{relpath!r} resolves outside the root") from None
                raise
        return _walk_nofollow(dirfd, relpath, flags, mode)
    finally:
        os.close(dirfd)


def _walk_nofollow(dirfd: int, relpath: str, flags: int, mode: int) -> int:
    parts = [p for p in relpath.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ConfinementError(f"{relpath!r}: '..' is refused without openat2")
    if not parts:
        raise ConfinementError("empty path")
    cur = os.dup(dirfd)
    try:
        for p in parts[:-1]:
            try:
                nxt = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ConfinementError(f"{relpath!r}: symlinks are refused") from None
                raise
            os.close(cur)
            cur = nxt
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=cur)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ConfinementError(f"{relpath!r}: symlinks are refused") from None
            raise
    finally:
        os.close(cur)


def read_text_beneath(root: str | os.PathLike[str], relpath: str, limit: int = 10 * 1024 * 1024) -> str:
    fd = open_beneath(root, relpath)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConfinementError(f"{relpath!r} is larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")
