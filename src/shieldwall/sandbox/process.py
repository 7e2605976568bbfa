"""The weak backend: a plain child process with rlimits and a scrubbed environment.

It is NOT a sandbox: the code sees the host's files, processes and network as the
calling user does. It exists for machines where nothing better runs, and it refuses to
start unless the policy sets ``sandbox.allow_weak: true``. Every run logs a warning.
What it does enforce: wall-clock timeout, output caps, CPU/file-size/open-file rlimits,
an address-space limit, a process limit when a pids cgroup can be made, an environment
holding only what the policy granted, and secret redaction. When run as root it drops
to a fresh unprivileged uid first, so that at least root's files stay out of reach.
"""

from __future__ import annotations

import logging
import os
import sys

from .bwrap import SANDBOX_GID, SYSTEM_PATH, _run_uid, dir_usage
from .cgroup import CgroupLayout, detect
from .launcher import LauncherPool
from .runner import Launch, execute, rlimits_for
from .types import RunResult, RunSpec

log = logging.getLogger("shieldwall.sandbox")

GUARANTEES = frozenset({
    "no_host_env", "cpu_limit", "wall_timeout", "output_limit", "secret_redaction",
    "memory_limit", "persistent_workspace", "subprocesses",
})

WARNING = ("shieldwall sandbox: the 'process' backend is NOT isolation (host files, "
           "processes and network stay reachable); allowed only by sandbox.allow_weak")


class ProcessBackend:
    name = "process"
    strength = 0
    guarantees = GUARANTEES

    def __init__(self, cgroup_root: str | None = None) -> None:
        self.python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        self._root = os.geteuid() == 0
        self._layout: CgroupLayout | None
        self._layout, _ = detect(cgroup_root)
        self._pool = LauncherPool(self._layout)
        if self._layout is not None:
            self.guarantees = GUARANTEES | {"pids_limit", "kills_all"}

    def available(self) -> tuple[bool, str]:
        return True, "always available; weak (rlimits + scrubbed environment only)"

    def prepare_workdir(self, path: str, uid: int | None) -> None:
        if self._root and uid is not None:
            os.chown(path, uid, SANDBOX_GID)

    def execute(self, spec: RunSpec) -> RunResult:
        log.warning(WARNING)
        print(WARNING, file=sys.stderr)
        env = {"PATH": SYSTEM_PATH, "HOME": spec.workdir, "LANG": "C.UTF-8",
               "TMPDIR": spec.workdir, "PYTHONDONTWRITEBYTECODE": "1"}
        env.update(spec.env)
        env.update(spec.secrets)
        has_cg = self._layout is not None
        return execute(Launch(
                argv=list(spec.argv), env=env, limits=spec.limits, backend=self.name,
                pool=self._pool, cwd=spec.workdir,
                uid=_run_uid(spec, self._root), gid=SANDBOX_GID if self._root else None,
                rlimits=rlimits_for(spec.limits, address_space=not has_cg, nproc=not has_cg),
                stdin=spec.stdin, secrets=spec.secrets,
                disk_usage=lambda: dir_usage(spec.workdir),
            ))
