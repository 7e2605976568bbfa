"""A cgroup per sandbox run, for memory and process limits — v2, or v1 where the memory and
pids controllers still live there (as on this project's CI machines).

The parent creates the group, the child joins it before ``exec`` (writing ``0`` to
``cgroup.procs`` moves the writer, so nothing forked later escapes), and after the run the
parent reads the counters, kills whatever is left and removes the group.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count()


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where per-run groups are made. ``version`` is 1 or 2; for v1 one base per controller."""

    version: int
    memory_base: Path
    pids_base: Path
    cpu_base: Path | None = None  # v1 cpuacct, for CPU accounting (optional)

    def describe(self) -> str:
        if self.version == 2:
            return f"cgroup v2 at {self.memory_base}"
        return f"cgroup v1 memory at {self.memory_base}, pids at {self.pids_base}"


def _own_paths() -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _writable_dir(p: Path) -> bool:
    return p.is_dir() and os.access(p, os.W_OK)


def detect(override: str | None = None) -> tuple[CgroupLayout | None, str]:
    """Find where this process may make per-run cgroups. Returns (layout, why-not)."""
    own = _own_paths()
    override = override or os.environ.get("SHIELDWALL_CGROUP_ROOT")
    # v1: separate hierarchies for memory and pids
    mem1, pids1 = _ROOT / "memory", _ROOT / "pids"
    if not override and (mem1 / "memory.limit_in_bytes").exists() and (pids1 / "cgroup.procs").exists():
        mbase = mem1 / own.get("memory", "/").lstrip("/")
        pbase = pids1 / own.get("pids", "/").lstrip("/")
        cbase: Path | None = _ROOT / "cpuacct" / own.get("cpuacct", "/").lstrip("/")
        if not (cbase and _writable_dir(cbase) and (cbase / "cpuacct.usage").exists()):
            cbase = None
        if _writable_dir(mbase) and _writable_dir(pbase):
            return CgroupLayout(1, mbase, pbase, cbase), ""
        return None, f"cgroup v1 memory/pids at {mbase}, {pbase} are not writable (not root?)"
    # v2: a delegated subtree with memory and pids enabled for children
    v2root = _ROOT if (_ROOT / "cgroup.controllers").exists() else _ROOT / "unified"
    if not (v2root / "cgroup.controllers").exists():
        return None, "no cgroup v2 mount and no v1 memory+pids controllers"
    base = Path(override) if override else v2root / own.get("", "/").lstrip("/")
    ctrl_file = base / "cgroup.controllers"
    if not ctrl_file.exists():
        return None, f"{base} is not a cgroup v2 directory"
    have = set(ctrl_file.read_text().split())
    if not {"memory", "pids"} <= have:
        return None, f"cgroup v2 at {base} lacks memory/pids controllers (has {sorted(have)})"
    sub = base / "cgroup.subtree_control"
    enabled = set(sub.read_text().split()) if sub.exists() else set()
    if not {"memory", "pids"} <= enabled:
        try:
            sub.write_text("+memory +pids")
        except OSError as e:
            return None, (
                f"cannot enable memory+pids for children of {base} ({e.strerror}); delegate a "
                "cgroup and set SHIELDWALL_CGROUP_ROOT to it"
            )
    return CgroupLayout(2, base, base), ""


def sweep_stale(layout: CgroupLayout) -> int:
    """Remove empty per-run groups left by processes that no longer exist."""
    removed = 0
    bases = {layout.memory_base, layout.pids_base}
    if layout.cpu_base is not None:
        bases.add(layout.cpu_base)
    for base in bases:
        with contextlib.suppress(OSError):
            for d in base.iterdir():
                parts = d.name.split("-")
                if len(parts) != 3 or parts[0] != "shieldwall" or not parts[1].isdigit():
                    continue
                if int(parts[1]) == os.getpid() or Path(f"/proc/{parts[1]}").exists():
                    continue
                with contextlib.suppress(OSError):
                    d.rmdir()
                    removed += 1
    return removed


@dataclass
class RunCgroup:
    layout: CgroupLayout
    dirs: list[Path] = field(default_factory=list)
    _procs_fds: list[int] = field(default_factory=list)
    _limits: tuple[int, int] | None = None  # (memory, pids) as last written

    @classmethod
    def create(cls, layout: CgroupLayout, memory_bytes: int, pids: int) -> RunCgroup:
        name = f"shieldwall-{os.getpid()}-{next(_counter)}"
        cg = cls(layout)
        try:
            if layout.version == 2:
                d = layout.memory_base / name
                d.mkdir()
                cg.dirs.append(d)
            else:
                m, p = layout.memory_base / name, layout.pids_base / name
                m.mkdir()
                cg.dirs.append(m)
                p.mkdir()
                cg.dirs.append(p)
                if layout.cpu_base is not None:
                    c = layout.cpu_base / name
                    c.mkdir()
                    cg.dirs.append(c)
            cg.set_limits(memory_bytes, pids)
            cg._procs_fds = [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
                             for d in cg.dirs]
        except OSError:
            cg.destroy()
            raise
        return cg

    def set_limits(self, memory_bytes: int, pids: int) -> None:
        if self._limits == (memory_bytes, pids):
            return  # already so (the launcher pool makes groups with the last run's limits)
        self._limits = None
        self._set_limits(memory_bytes, pids)
        self._limits = (memory_bytes, pids)

    def _set_limits(self, memory_bytes: int, pids: int) -> None:
        if self.layout.version == 2:
            d = self.dirs[0]
            (d / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(pids))
        else:
            m, p = self.dirs[0], self.dirs[1]
            # memsw must stay >= the memory limit: order the writes accordingly
            cur = self._read(m, "memory.limit_in_bytes").strip()
            grow = not cur.isdigit() or int(cur) < memory_bytes
            files = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]
            for f in files if grow else files[::-1]:
                with contextlib.suppress(OSError):
                    (m / f).write_text(str(memory_bytes))
            if int(self._read(m, "memory.limit_in_bytes").strip() or 0) != memory_bytes:
                (m / "memory.limit_in_bytes").write_text(str(memory_bytes))
            (p / "pids.max").write_text(str(pids))

    def reset_peak(self) -> None:
        """Start the peak-memory counter afresh (v1: ``max_usage_in_bytes``), so that a
        pre-made sandbox's waiter is not counted in the run's peak. v2's ``memory.peak``
        resets only per open file, so there it keeps the waiter's few MB."""
        if self.layout.version == 1 and self.dirs:
            with contextlib.suppress(OSError):
                fd = os.open(f"{self.dirs[0]}/memory.max_usage_in_bytes", os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)

    def warm(self) -> None:
        """Move a short-lived process through the group once: the first attach to a fresh
        v1 memory/cpuacct group costs ~5-15 ms of kernel time, paid here, off the run."""
        if not self.dirs:
            return
        helper = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            for fd in self._procs_fds:
                with contextlib.suppress(OSError):
                    os.write(fd, str(helper.pid).encode())
        finally:
            assert helper.stdin is not None
            helper.stdin.close()
            helper.wait()

    def join_in_child(self) -> None:
        """Called between fork and exec: move the calling process into every group."""
        for fd in self._procs_fds:
            os.write(fd, b"0")

    def _read(self, d: Path, name: str) -> str:
        try:  # plain os calls: a run reads a dozen of these on its clock
            fd = os.open(f"{d}/{name}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return ""
        try:
            chunks = [os.read(fd, 65536)]
            while len(chunks[-1]) == 65536:
                chunks.append(os.read(fd, 65536))
            return b"".join(chunks).decode("ascii", "replace")
        except OSError:
            return ""
        finally:
            os.close(fd)

    @staticmethod
    def _kv(text: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
        return out

    def stats(self) -> dict[str, int]:
        """oom_kills, memory_peak, pids_max_hits, pids_peak."""
        out = {"oom_kills": 0, "memory_peak": 0, "pids_max_hits": 0, "pids_peak": 0,
               "cpu_user_us": 0, "cpu_sys_us": 0}
        if not self.dirs:
            return out
        if self.layout.version == 2:
            d = self.dirs[0]
            out["oom_kills"] = self._kv(self._read(d, "memory.events")).get("oom_kill", 0)
            peak = self._read(d, "memory.peak").strip()
            out["memory_peak"] = int(peak) if peak.isdigit() else 0
            out["pids_max_hits"] = self._kv(self._read(d, "pids.events")).get("max", 0)
            pp = self._read(d, "pids.peak").strip()
            out["pids_peak"] = int(pp) if pp.isdigit() else 0
            cs = self._kv(self._read(d, "cpu.stat"))
            out["cpu_user_us"], out["cpu_sys_us"] = cs.get("user_usec", 0), cs.get("system_usec", 0)
        else:
            m, p = self.dirs[0], self.dirs[1]
            oc = self._kv(self._read(m, "memory.oom_control"))
            out["oom_kills"] = oc.get("oom_kill", 0)
            if "oom_kill" not in oc:  # old kernels: any limit hit counts
                fc = self._read(m, "memory.failcnt").strip()
                out["oom_kills"] = int(fc) if fc.isdigit() else 0
            mp = self._read(m, "memory.max_usage_in_bytes").strip()
            out["memory_peak"] = int(mp) if mp.isdigit() else 0
            out["pids_max_hits"] = self._kv(self._read(p, "pids.events")).get("max", 0)
            pp = self._read(p, "pids.peak").strip()
            out["pids_peak"] = int(pp) if pp.isdigit() else 0
            if len(self.dirs) > 2:
                u = self._read(self.dirs[2], "cpuacct.usage_user").strip()
                sy = self._read(self.dirs[2], "cpuacct.usage_sys").strip()
                out["cpu_user_us"] = int(u) // 1000 if u.isdigit() else 0
                out["cpu_sys_us"] = int(sy) // 1000 if sy.isdigit() else 0
        return out

    @property
    def counts_cpu(self) -> bool:
        """Whether the group accounts CPU time (v2, or v1 with a cpuacct group)."""
        return bool(self.dirs) and (self.layout.version == 2 or len(self.dirs) > 2)

    def cpu_us(self) -> tuple[int, int]:
        """(user, system) CPU microseconds used in the group so far (0, 0 if unknown)."""
        if self.layout.version == 2 and self.dirs:
            cs = self._kv(self._read(self.dirs[0], "cpu.stat"))
            return cs.get("user_usec", 0), cs.get("system_usec", 0)
        if len(self.dirs) > 2:
            u = self._read(self.dirs[2], "cpuacct.usage_user").strip()
            sy = self._read(self.dirs[2], "cpuacct.usage_sys").strip()
            return (int(u) // 1000 if u.isdigit() else 0, int(sy) // 1000 if sy.isdigit() else 0)
        return 0, 0

    def pids(self) -> list[int]:
        seen: set[int] = set()
        for d in self.dirs:
            for tok in self._read(d, "cgroup.procs").split():
                if tok.isdigit():
                    seen.add(int(tok))
        return sorted(seen)

    def kill(self, deadline_s: float = 2.0) -> bool:
        """SIGKILL everything in the group until it is empty. True when empty."""
        if not self.dirs:
            return True
        if self.layout.version == 2:
            with contextlib.suppress(OSError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
        end = time.monotonic() + deadline_s
        while True:
            left = self.pids()
            if not left:
                return True
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > end:
                return False
            time.sleep(0.002)

    def destroy(self) -> None:
        for fd in self._procs_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._procs_fds = []
        self.kill()
        for d in reversed(self.dirs):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.002)
        self.dirs = []

