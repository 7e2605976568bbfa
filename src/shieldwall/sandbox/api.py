"""The friendly face: ``with Sandbox(limits=...) as sb: sb.run_code(src)``.

In the spirit of E2B's SDK: a sandbox owns a work directory (ephemeral, or a named
persistent workspace), runs code and commands in it, and moves files in and out. Each
``run``/``run_code`` is a fresh sandboxed process tree; only the work directory carries
over between calls of one ``Sandbox``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import backends
from .types import Backend, Limits, NetworkMode, RunResult, RunSpec, SandboxError
from .workspace import WorkDir, check_name, default_workspaces_dir

_CODE_ARG_MAX = 64 * 1024  # larger programs go in on stdin


class Sandbox:
    def __init__(
        self,
        limits: Limits | Mapping[str, Any] | None = None,
        *,
        backend: str | Backend = "auto",
        allow_weak: bool = False,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        workspace: str | None = None,
        workspaces_dir: str | Path | None = None,
        ro_paths: Sequence[str] = (),
        rw_paths: Sequence[str] = (),
        network: NetworkMode = "none",
        proxy_socket: str | None = None,
        cgroup_root: str | None = None,
        needs: Sequence[str] = (),
        premake: bool | None = None,
    ) -> None:
        """``backend="auto"`` picks the strongest available backend that claims every
        guarantee in ``needs`` (e.g. ``["subprocesses"]`` to run commands, not only Python;
        see :data:`shieldwall.sandbox.protocol.GUARANTEES`). ``premake`` (bwrap): set the
        next run's sandbox up in the background after each run (True), never (False), or
        from the second run on (None: a sandbox that ran twice will likely run again); see
        :mod:`shieldwall.sandbox.premade`."""
        if isinstance(limits, Limits):
            self.limits = limits
        else:
            self.limits = Limits().merged(limits)
        if isinstance(backend, str):
            need = set(needs) | ({"proxy_network"} if network == "proxy" else set())
            self.backend = backends.get(backend, allow_weak=allow_weak, cgroup_root=cgroup_root,
                                        needs=frozenset(need))
        else:
            self.backend = backend
        if network == "proxy" and "proxy_network" not in self.backend.guarantees:
            raise SandboxError(f"backend {self.backend.name!r} has no proxy network mode")
        if network == "proxy" and not proxy_socket:
            raise SandboxError("network='proxy' needs the egress proxy's Unix socket path")
        self.env = dict(env or {})
        self.secrets = dict(secrets or {})
        self.ro_paths, self.rw_paths = tuple(ro_paths), tuple(rw_paths)
        for p in (*self.ro_paths, *self.rw_paths):
            if not Path(p).is_absolute():
                raise SandboxError(f"extra sandbox paths must be absolute: {p!r}")
        self.network: NetworkMode = network
        self.proxy_socket = proxy_socket
        persistent = None
        if workspace is not None:
            persistent = Path(workspaces_dir or default_workspaces_dir()) / check_name(workspace)
            persistent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        from .bwrap import BwrapBackend

        self._bwrap = self.backend if isinstance(self.backend, BwrapBackend) else None
        self._ephemeral = persistent is None
        adopted = None
        if self._bwrap is not None and self._ephemeral and premake is not False:
            adopted = self._bwrap.adopt_workdir(self.limits.disk_bytes)
        if adopted is not None:  # fresh, prepared while the last new sandbox settled
            self._wd, self._uid = adopted
        else:
            self._uid = _sandbox_uid(self.backend)
            gid = None if self._uid is None else 65534
            self._wd = WorkDir(self.limits.disk_bytes, self._uid, gid, persistent=persistent)
            prep = getattr(self.backend, "prepare_workdir", None)
            if prep is not None and not self._wd.mounted:
                prep(self._wd.path, self._uid)
        self._closed = False
        self._runs = 0
        self._premake = premake
        self._spare_for: RunSpec | None = None  # the last run, as a spare's template

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            forget = getattr(self.backend, "forget", None)
            if forget is not None:
                forget(self._wd.path)
            self._wd.close(save=True)
            if self._bwrap is not None and self._spare_for is not None:
                # the next new sandbox (the gate makes one per CodeRun) may adopt a spare
                # work directory whose sandbox is set up for the options this one ran with
                self._bwrap.want_spare(self._spare_for)

    @property
    def workdir(self) -> str:
        """The work directory's host path (bound at ``/workspace`` inside)."""
        return self._wd.path

    # ---------------------------------------------------------------- runs
    def _spec(self, argv: Sequence[str], stdin: bytes,
              limits: Mapping[str, Any] | None) -> RunSpec:
        if self._closed:
            raise SandboxError("this sandbox is closed")
        return RunSpec(
            argv=list(argv), workdir=self._wd.path, limits=self.limits.merged(limits),
            env=self.env, stdin=stdin, ro_paths=self.ro_paths, rw_paths=self.rw_paths,
            network=self.network, proxy_socket=self.proxy_socket, secrets=self.secrets,
            host_uid=self._uid,
        )

    def run(self, argv: Sequence[str], *, stdin: bytes = b"",
            limits: Mapping[str, Any] | None = None) -> RunResult:
        """Run a command (``argv[0]`` looked up on the sandbox's PATH)."""
        if not argv:
            raise SandboxError("empty argv")
        if "subprocesses" not in self.backend.guarantees:
            raise SandboxError(f"backend {self.backend.name!r} runs Python code only")
        return self._execute(self._spec(argv, stdin, limits))

    def _execute(self, spec: RunSpec) -> RunResult:
        """By default a sandbox that has already run once is taken to run again: from its
        second run on, bwrap sets the next run's sandbox up in the background (fresh for
        that run, see :mod:`shieldwall.sandbox.premade`). When an ephemeral sandbox that
        ran closes, bwrap prepares a spare work directory and its sandbox for the next new
        sandbox (one sandbox per run, as the gate's ``CodeRun`` does)."""
        self._runs += 1
        if self._bwrap is not None:
            premake = self._runs > 1 if self._premake is None else self._premake
            if self._premake is not False and self._ephemeral:
                self._spare_for = spec
            return self._bwrap.execute(spec, premake_next=premake)
        return self.backend.execute(spec)

    def run_code(self, code: str, *, language: str = "python", stdin: bytes = b"",
                 limits: Mapping[str, Any] | None = None) -> RunResult:
        """Run a program's source. ``language`` is ``python`` or ``sh``."""
        if language == "python":
            if len(code) <= _CODE_ARG_MAX or self.backend.name == "wasm":
                argv = [self.backend.python, "-I", "-c", code]
            else:  # too long for one argv string: the program comes in on stdin
                if stdin:
                    raise SandboxError("a program larger than 64 KiB cannot also take stdin")
                argv = [self.backend.python, "-I", "-c",
                        "import sys;_s=sys.stdin.read();exec(compile(_s,'<code>','exec'))"]
                stdin = code.encode()
        elif language in ("sh", "bash", "shell"):
            if "subprocesses" not in self.backend.guarantees:
                raise SandboxError(f"backend {self.backend.name!r} runs Python code only")
            argv = ["/bin/sh", "-c", code]
        else:
            raise SandboxError(f"unsupported language {language!r}")
        return self._execute(self._spec(argv, stdin, limits))

    # ---------------------------------------------------------------- files
    def write_file(self, path: str, data: bytes | str) -> None:
        self._wd.write(path, data.encode() if isinstance(data, str) else data)

    def read_file(self, path: str, max_bytes: int | None = None) -> bytes:
        return self._wd.read(path, max_bytes)

    def list_files(self) -> list[str]:
        return self._wd.list()


def _sandbox_uid(backend: Backend) -> int | None:
    """The host uid that owns the work directory and runs the sandbox (root only)."""
    import os

    if os.geteuid() != 0 or backend.name == "wasm":
        return None
    from .bwrap import SANDBOX_UID, host_ids

    return SANDBOX_UID if backend.name == "gvisor" else host_ids()
