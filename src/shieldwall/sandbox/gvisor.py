"""gVisor backend: the program runs on gVisor's user-space kernel (the Sentry), so a
Linux kernel bug reachable from the guest is not reachable from the host.

``runsc`` runs an OCI bundle whose root is an empty, read-only skeleton; the host's
``/usr`` is bound read-only, ``/etc`` is the same generated one the bwrap backend uses,
``/workspace`` is the work directory, ``/tmp`` a tmpfs. ``--network=none`` (no
interface but loopback), ``--platform=ptrace`` (the KVM platform hangs on these
machines). The runsc process tree (sentry, gofer) runs in a per-run cgroup bounding its
memory (the guest's plus a fixed runtime overhead); guest processes are Sentry tasks, not
host processes, so a fork bomb is bounded by that memory and the wall clock. Each run gets
its own state directory, removed afterwards.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Any

from .bwrap import SANDBOX_GID, SANDBOX_UID, SYSTEM_PATH, WORKDIR, dir_usage, make_etc_dir
from .cgroup import CgroupLayout, detect
from .launcher import LauncherPool
from .runner import Launch, execute
from .types import ErrorKind, RunResult, RunSpec

RUNTIME_OVERHEAD_BYTES = 192 << 20  # sentry + gofer resident memory, on top of the guest's
RUNTIME_CPU_S = 1.0  # CPU the runtime spends booting and under ptrace, on top of the guest
RUNTIME_THREADS = 256  # host threads of sentry and gofer (Go runtime), on top of the guest

GUARANTEES = frozenset({
    "no_network", "no_host_files", "no_host_processes", "no_host_env", "unprivileged",
    "kernel_boundary", "memory_limit", "cpu_limit", "disk_limit",
    "wall_timeout", "output_limit", "kills_all", "secret_redaction", "persistent_workspace",
    "subprocesses",
})
_ids = itertools.count()


class GvisorBackend:
    name = "gvisor"
    strength = 40
    guarantees = GUARANTEES
    python = "/usr/bin/python3"

    def __init__(self, cgroup_root: str | None = None) -> None:
        self._runsc = shutil.which("runsc")
        self._layout: CgroupLayout | None
        self._layout, self._cg_why = detect(cgroup_root)
        self._pool = LauncherPool(self._layout)
        self._skeleton: str | None = None
        self._etc: str | None = None

    def available(self) -> tuple[bool, str]:
        if not self._runsc:
            return False, "runsc (gVisor) is not installed: apt-get install runsc"
        if os.geteuid() != 0:
            return False, "runsc needs root here (rootless mode is not supported by this backend)"
        return True, f"{self._runsc} --platform=ptrace --network=none"

    def prepare_workdir(self, path: str, uid: int | None) -> None:
        # the guest runs as 65534 inside the Sentry, which checks ownership as the host sees it
        os.chown(path, SANDBOX_UID, SANDBOX_GID)

    def _root(self) -> tuple[str, str]:
        if self._skeleton is None or not os.path.isdir(self._skeleton):
            d = tempfile.mkdtemp(prefix="shieldwall-gvisor-root-")
            for sub in ("usr", "etc", "proc", "tmp", "dev", "sys", WORKDIR.strip("/")):
                os.makedirs(os.path.join(d, sub), exist_ok=True)
            for top in ("bin", "sbin", "lib", "lib64"):
                if os.path.islink("/" + top):
                    os.symlink(os.readlink("/" + top), os.path.join(d, top))
            os.chmod(d, 0o755)  # noqa: S103 - an empty read-only skeleton
            self._skeleton = d
            atexit.register(shutil.rmtree, d, True)
        if self._etc is None or not os.path.isdir(self._etc):
            self._etc = make_etc_dir()
            atexit.register(shutil.rmtree, self._etc, True)
        return self._skeleton, self._etc

    def _config(self, spec: RunSpec) -> dict[str, Any]:
        skeleton, etc = self._root()
        env = {"PATH": SYSTEM_PATH, "HOME": WORKDIR, "LANG": "C.UTF-8", "TMPDIR": "/tmp",  # noqa: S108
               "PYTHONDONTWRITEBYTECODE": "1", **spec.env, **spec.secrets}
        cpu = max(1, int(spec.limits.cpu_s + 0.999))
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/etc", "type": "bind", "source": etc, "options": ["rbind", "ro"]},
            {"destination": "/tmp", "type": "tmpfs",  # noqa: S108 - inside the guest "source": "tmpfs",
             "options": [f"size={spec.limits.tmp_bytes}", "nosuid", "nodev"]},
            {"destination": WORKDIR, "type": "bind", "source": spec.workdir,
             "options": ["rbind", "rw"]},
        ]
        for p in spec.ro_paths:
            mounts.append({"destination": p, "type": "bind", "source": p,
                           "options": ["rbind", "ro"]})
        for p in spec.rw_paths:
            mounts.append({"destination": p, "type": "bind", "source": p,
                           "options": ["rbind", "rw"]})
        return {
            "ociVersion": "1.0.0",
            "process": {
                "terminal": False, "user": {"uid": SANDBOX_UID, "gid": SANDBOX_GID},
                "args": list(spec.argv), "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": WORKDIR, "noNewPrivileges": True,
                "rlimits": [
                    {"type": "RLIMIT_CPU", "soft": cpu, "hard": cpu + 1},
                    {"type": "RLIMIT_FSIZE", "soft": spec.limits.file_bytes,
                     "hard": spec.limits.file_bytes},
                    {"type": "RLIMIT_NOFILE", "soft": spec.limits.open_files,
                     "hard": spec.limits.open_files},
                    {"type": "RLIMIT_AS", "soft": spec.limits.memory_bytes,
                     "hard": spec.limits.memory_bytes},
                ],
            },
            "root": {"path": skeleton, "readonly": True},
            "hostname": "sandbox",
            "mounts": mounts,
            "linux": {"namespaces": [{"type": t} for t in
                                     ("pid", "network", "ipc", "uts", "mount")]},
        }

    def execute(self, spec: RunSpec) -> RunResult:
        ok, why = self.available()
        if not ok:
            return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, backend=self.name,
                             message=why)
        if spec.network != "none":
            return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, backend=self.name,
                             message="the gvisor backend supports network='none' only")
        run_dir = tempfile.mkdtemp(prefix="shieldwall-gvisor-")
        try:
            bundle = os.path.join(run_dir, "bundle")
            os.mkdir(bundle, 0o700)
            with open(os.path.join(bundle, "config.json"), "w") as f:
                json.dump(self._config(spec), f)
            cid = f"sw-{os.getpid()}-{next(_ids)}"
            assert self._runsc
            argv = [self._runsc, "--root", os.path.join(run_dir, "state"), "--platform=ptrace",
                    "--network=none", "--ignore-cgroups", "run", "--bundle", bundle, cid]
            # the cgroup bounds runsc's whole tree: the guest plus the runtime's overhead
            limits = spec.limits
            host_limits = replace(limits, memory_bytes=limits.memory_bytes
                                  + RUNTIME_OVERHEAD_BYTES, pids=limits.pids + RUNTIME_THREADS)
            r = execute(Launch(
                argv=argv, env={"PATH": SYSTEM_PATH}, limits=host_limits, backend=self.name,
                pool=self._pool, cwd="/", stdin=spec.stdin, secrets=spec.secrets,
                disk_usage=lambda: dir_usage(spec.workdir), signal_exit_codes=True,
                # the Sentry does not stop a spinning guest at RLIMIT_CPU: watch the cgroup
                cpu_watch_s=limits.cpu_s + RUNTIME_CPU_S,
            ))
            if r.error is ErrorKind.PIDS_LIMIT:  # host threads of the runtime, not the guest
                r = replace(r, error=ErrorKind.KILLED, message="gVisor runtime thread limit reached")
            elif r.error is None and r.exit_code not in (0, None) and "MemoryError" in r.stderr:
                r = replace(r, error=ErrorKind.MEMORY_LIMIT,
                            message=f"memory limit of {limits.memory_bytes} bytes reached")
            return r
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
