"""Work directories: where a run's files live on the host, with a disk quota.

Ephemeral (the default): a fresh directory per :class:`~shieldwall.sandbox.Sandbox`,
removed on close. Named: ``Workspace.open(name)`` keeps its files between sandboxes (like
a Daytona workspace); while in use its files sit in the same quota'd directory and are
copied back on close (regular files, directories and symlinks only, permission bits
masked to 0o777 — nothing setuid, no device nodes, no hard links survive).

Quota: as root the directory is a tmpfs mount of exactly ``disk_bytes`` (``nosuid``,
``nodev``), so a full disk is ENOSPC inside the sandbox. Without mount rights the
directory is plain and the quota is checked after each run (``disk_limit``) with
``RLIMIT_FSIZE`` bounding single files.

Host-side file access (``read``/``write``) never follows a symlink: the sandbox owns the
directory and may have planted links to host files.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def mount_tmpfs(path: str, size: int, uid: int, gid: int) -> bool:
    opts = f"size={size},mode=0700,uid={uid},gid={gid}".encode()
    rc: int = _c().mount(b"tmpfs", path.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, opts)
    return rc == 0


def umount(path: str) -> None:
    _c().umount2(path.encode(), _MNT_DETACH)


def default_root() -> Path:
    return Path(os.environ.get("SHIELDWALL_SANDBOX_DIR", tempfile.gettempdir())) / "shieldwall-sandboxes"


def default_workspaces_dir() -> Path:
    return Path(os.environ.get("SHIELDWALL_WORKSPACES_DIR",
                               Path.home() / ".shieldwall" / "workspaces"))


class PathEscape(ValueError):
    """A file path that leaves the work directory or goes through a symlink."""


def _components(rel: str) -> list[str]:
    if not rel or rel.startswith("/") or "\0" in rel:
        raise PathEscape(f"path must be relative to the work directory: {rel!r}")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise PathEscape(f"path may not contain '..': {rel!r}")
    return parts


class WorkDir:
    """A host directory bound at ``/workspace`` inside the sandbox."""

    def __init__(self, disk_bytes: int, uid: int | None, gid: int | None,
                 root: Path | None = None, persistent: Path | None = None) -> None:
        base = root or default_root()
        base.mkdir(parents=True, exist_ok=True, mode=0o711)
        with contextlib.suppress(OSError):
            os.chmod(base, 0o711)  # noqa: S103 - traversable by the sandbox uid, not listable
        _sweep_once(base)
        self.outer = tempfile.mkdtemp(prefix=f"sb-{os.getpid()}-", dir=base)
        os.chmod(self.outer, 0o711)  # noqa: S103 - see above
        self.path = os.path.join(self.outer, "w")
        os.mkdir(self.path, 0o700)
        self.disk_bytes = disk_bytes
        self.uid, self.gid = uid, gid
        self.mounted = False
        if os.geteuid() == 0:
            self.mounted = mount_tmpfs(self.path, disk_bytes, uid if uid is not None else 0,
                                       gid if gid is not None else 0)
        if not self.mounted and uid is not None:
            os.chown(self.path, uid, gid if gid is not None else -1)
        self.persistent = persistent
        self._lock_fd: int | None = None
        if persistent is not None:
            self._load(persistent)

    # ---------------------------------------------------------------- persistence
    def _load(self, src: Path) -> None:
        src.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(str(src) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(self._lock_fd)
            self._lock_fd = None
            self.close(save=False)
            raise RuntimeError(f"workspace {src.name!r} is in use by another sandbox") from e
        _copy_tree(str(src), self.path, self.uid, self.gid)

    def _save(self, dst: Path) -> None:
        tmp = Path(tempfile.mkdtemp(prefix=dst.name + ".", dir=dst.parent))
        _copy_tree(self.path, str(tmp), None, None)
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old, ignore_errors=True)

    def close(self, save: bool = True) -> None:
        if self.persistent is not None and save and self._lock_fd is not None:
            self._save(self.persistent)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self.mounted:
            umount(self.path)
            self.mounted = False
        try:  # after the umount both are empty: two calls, not a tree walk
            os.rmdir(self.path)
            os.rmdir(self.outer)
        except OSError:
            shutil.rmtree(self.outer, ignore_errors=True)

    # ---------------------------------------------------------------- host-side files
    def _open_parent(self, rel: str, create: bool) -> tuple[int, str]:
        parts = _components(rel)
        fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                        if self.uid is not None:
                            os.chown(part, self.uid, self.gid if self.gid is not None else -1,
                                     dir_fd=fd, follow_symlinks=False)
                nfd = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=fd)
                os.close(fd)
                fd = nfd
        except OSError as e:
            os.close(fd)
            raise PathEscape(f"cannot reach {rel!r} inside the work directory: {e}") from e
        return fd, parts[-1]

    def write(self, rel: str, data: bytes) -> None:
        if len(data) > self.disk_bytes:
            raise ValueError(f"{rel!r} is larger than the work directory's quota")
        dfd, name = self._open_parent(rel, create=True)
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        except OSError as e:
            raise PathEscape(f"cannot write {rel!r}: {e}") from e
        finally:
            os.close(dfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PathEscape(f"{rel!r} is not a regular file")
            if self.uid is not None:
                os.fchown(fd, self.uid, self.gid if self.gid is not None else -1)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def read(self, rel: str, max_bytes: int | None = None) -> bytes:
        dfd, name = self._open_parent(rel, create=False)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except OSError as e:
            raise PathEscape(f"cannot read {rel!r}: {e}") from e
        finally:
            os.close(dfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise PathEscape(f"{rel!r} is not a regular file")
            if st.st_nlink > 1:  # a hard link may point at a file from outside
                raise PathEscape(f"{rel!r} has other hard links; refusing to read it")
            cap = max_bytes if max_bytes is not None else self.disk_bytes
            chunks, total = [], 0
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                total += len(b)
                if total > cap:
                    raise ValueError(f"{rel!r} is larger than {cap} bytes")
                chunks.append(b)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def list(self) -> list[str]:
        out: list[str] = []
        for root, dirs, files in os.walk(self.path, followlinks=False):
            rel = os.path.relpath(root, self.path)
            for f in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                out.append(f if rel == "." else f"{rel}/{f}")
        return sorted(out)


_swept: set[str] = set()


def _sweep_once(base: Path) -> None:
    """Once per process and base: remove work directories left by dead processes."""
    key = f"{os.getpid()}:{base}"
    if key in _swept:
        return
    _swept.add(key)
    for d in base.glob("sb-*-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or Path(f"/proc/{pid}").exists():
            continue
        inner = d / "w"
        if os.path.ismount(inner):
            umount(str(inner))
        shutil.rmtree(d, ignore_errors=True)


def _copy_tree(src: str, dst: str, uid: int | None, gid: int | None) -> None:
    """Copy regular files, directories and symlinks (as links), masking modes to 0o777."""
    for entry in os.scandir(src):
        s, d = entry.path, os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(d, 0o700)
            _copy_tree(s, d, uid, gid)
            os.chmod(d, stat.S_IMODE(st.st_mode) & 0o777)
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(s, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                with open(d, "xb") as out, os.fdopen(fd, "rb", closefd=False) as inp:
                    shutil.copyfileobj(inp, out)
            finally:
                os.close(fd)
            os.chmod(d, stat.S_IMODE(st.st_mode) & 0o777)
        else:
            continue
        if uid is not None:
            os.chown(d, uid, gid if gid is not None else -1, follow_symlinks=False)


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid workspace name {name!r}: letters, digits, '_', '.', '-'")
    return name
