"""Warm pool: sandboxes started ahead of time, each waiting for exactly one program.

A pooled worker is a complete bwrap sandbox (its own namespaces, cgroup, seccomp filter,
fresh work directory) running a small "zygote" Python that has finished interpreter
start-up and blocks on its stdin. Dispatch writes the program to that pipe; the zygote
runs it (Python source with ``exec`` in a fresh ``__main__`` namespace, or a command
with ``execvp``) and the worker ends with it. Workers are never reused.

What two runs share: nothing at run time. What a run inherits that a cold run would not:
an interpreter already initialised by the zygote (``sys.modules`` holds the standard
modules the zygote imported — listed in ``PREIMPORT`` — and the zygote's own few
globals are not reachable from the program's namespace), and CPU time spent on start-up
counts against the run's CPU limit. Limits, environment and secrets are fixed per pool.
The wall-clock limit counts from dispatch.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .bwrap import BwrapBackend, host_ids
from .runner import Started, abandon, finish
from .types import ErrorKind, Limits, RunResult, RunSpec, SandboxError
from .workspace import WorkDir

PREIMPORT = ("json", "re", "math", "collections", "itertools", "functools")

_ZYGOTE = r"""
import sys, os, struct, json
#PREIMPORT#
def _zygote():
    raw = sys.stdin.buffer
    hdr = raw.read(4)
    if len(hdr) < 4:
        os._exit(0)
    req = json.loads(raw.read(struct.unpack(">I", hdr)[0]))
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    if req.get("argv"):
        # run the command as a child so its end can be reported before the teardown;
        # posix_spawn (vfork-style) does not copy this interpreter's page tables
        try:
            pid = os.posix_spawnp(req["argv"][0], req["argv"], os.environ)
        except OSError as e:
            os.write(2, ("%s: %s\n" % (req["argv"][0], e.strerror)).encode())
            os.write(int(sys.argv[1]), b"127\n")
            os._exit(127)
        st = os.waitpid(pid, 0)[1]
        rc = os.waitstatus_to_exitcode(st)
        rc = 128 - rc if rc < 0 else rc
        os.write(int(sys.argv[1]), str(rc).encode() + b"\n")
        os._exit(rc)
    return compile(req["code"], "<code>", "exec")
_code = _zygote()
del _zygote
_g = {"__name__": "__main__", "__builtins__": __builtins__}
_status = int(sys.argv[1])
try:
    exec(_code, _g)
    _rc = 0
except SystemExit as _e:
    _rc = _e.code if isinstance(_e.code, int) else (0 if _e.code is None else 1)
    if not isinstance(_e.code, int) and _e.code is not None:
        print(_e.code, file=sys.stderr)
except BaseException:
    sys.excepthook(*sys.exc_info())
    _rc = 1
# skip interpreter finalisation (the sandbox is discarded anyway); run atexit hooks first
import atexit
atexit._run_exitfuncs()
for _f in (sys.stdout, sys.stderr):
    try:
        _f.flush()
    except Exception:
        pass
os.write(_status, str(_rc).encode() + b"\n")
os._exit(_rc)
"""


class WarmPool:
    """``size`` bwrap sandboxes kept started; ``run_code``/``run`` dispatch to one."""

    def __init__(self, size: int = 2, limits: Limits | Mapping[str, Any] | None = None, *,
                 env: Mapping[str, str] | None = None,
                 secrets: Mapping[str, str] | None = None,
                 backend: BwrapBackend | None = None) -> None:
        if backend is None:
            from .backends import get

            b = get("bwrap")
            assert isinstance(b, BwrapBackend)
            backend = b
        self.backend = backend
        self.limits = limits if isinstance(limits, Limits) else Limits().merged(limits)
        self.env = dict(env or {})
        self.secrets = dict(secrets or {})
        self.size = size
        self._ready: list[_Worker] = []
        self._trash: list[_Worker] = []  # used workers, dropped on the background thread
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        src = _ZYGOTE.replace("#PREIMPORT#", "".join(f"import {m}\n" for m in PREIMPORT))
        self._argv = [backend.python, "-I", "-c", src]
        self._thread = threading.Thread(target=self._loop, name="shieldwall-warm-pool",
                                        daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- workers
    def _spawn(self) -> _Worker:
        uid = host_ids() if _is_root() else None
        wd = WorkDir(self.limits.disk_bytes, uid, None if uid is None else 65534)
        if not wd.mounted:
            self.backend.prepare_workdir(wd.path, uid)
        r, w = os.pipe2(os.O_CLOEXEC)
        # the zygote waits for its program: the wall clock counts only from dispatch
        spec = RunSpec(argv=[*self._argv, "@fd2"], workdir=wd.path, limits=self.limits,
                       env=self.env, secrets=self.secrets, extra_fds=[w], host_uid=uid)
        try:
            started = self.backend.start(spec)
        finally:
            os.close(w)
        if isinstance(started, RunResult):
            os.close(r)
            wd.close(save=False)
            raise SandboxError(f"warm pool worker failed to start: {started.message}")
        return _Worker(started, wd, r)

    def _loop(self) -> None:
        while not self._closed:
            with self._lock:
                trash, self._trash = self._trash, []
                need = self.size - len(self._ready)
            for t in trash:
                _drop(t)
            if need > 0:
                try:
                    w = self._spawn()
                except (OSError, SandboxError):
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                with self._lock:
                    if self._closed:
                        _drop(w)
                        return
                    self._ready.append(w)
                continue
            self._wake.wait(5.0)
            self._wake.clear()

    def _take(self) -> _Worker:
        if self._closed:
            raise SandboxError("this warm pool is closed")
        with self._lock:
            w = self._ready.pop(0) if self._ready else None
        if w is None:
            self._wake.set()
            return self._spawn()
        return w  # the refill starts after this run, not during it

    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    # ---------------------------------------------------------------- runs
    def _dispatch(self, req: dict[str, Any]) -> RunResult:
        w = self._take()
        payload = json.dumps(req).encode()
        try:
            return finish(w.started, struct.pack(">I", len(payload)) + payload, w.status_fd)
        finally:
            # what is left of the worker is killed by finish(); its work directory and
            # cgroup go on the background thread (no thread start on this run's clock)
            with self._lock:
                if self._closed:
                    w.drop()
                else:
                    self._trash.append(w)
            self._wake.set()

    def run_code(self, code: str) -> RunResult:
        return self._dispatch({"code": code})

    def run(self, argv: Sequence[str]) -> RunResult:
        if not argv:
            return RunResult("", "", None, ErrorKind.SANDBOX_ERROR, message="empty argv")
        return self._dispatch({"argv": list(argv)})

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            items, self._ready = self._ready + self._trash, []
            self._trash = []
        for w in items:
            _drop(w)

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class _Worker:
    started: Started
    workdir: WorkDir
    status_fd: int

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            abandon(self.started)
        with contextlib.suppress(OSError):
            os.close(self.status_fd)
        self.workdir.close(save=False)


def _drop(w: _Worker) -> None:
    w.drop()


def _is_root() -> bool:
    return os.geteuid() == 0
