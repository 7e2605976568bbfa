"""Run agent code through the gate: a ``CodeRun`` action is decided, then executed in a
sandbox configured from the policy, and its digest and outcome are audited."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..actions import CodeRun, ToolCall, Verdict
from ..errors import Denied
from .api import Sandbox
from .settings import resolve
from .types import RunResult, SandboxError

if TYPE_CHECKING:
    from ..session import Session

_PLACEHOLDER = re.compile(r"\{\{\s*secret:[^}]*\}\}")


def run_code(session: Session, code: str = "", *, argv: Sequence[str] = (),
             language: str = "python", tool: str = "run_code",
             limits: Mapping[str, Any] | None = None, workspace: str | None = None,
             files: Mapping[str, bytes | str] | None = None, stdin: bytes = b"") -> RunResult:
    """Decide and run. Raises :class:`Denied` when the gate refuses."""
    wall, state = session.wall, session.state
    action = CodeRun(code=code, argv=tuple(argv), language=language,
                     limits=dict(limits or {}), tool=tool)
    decision = session.decide(action)
    if decision.verdict == Verdict.ASK:  # a person sees the exact code and limits
        decision = session.ask(decision)
    session.last = decision
    if decision.verdict > Verdict.CHANGES:
        raise Denied(decision)
    act = decision.action
    assert isinstance(act, CodeRun)
    s = resolve(state.policy.sandbox, state.role, tool)
    if workspace is not None and not s.workspaces:
        raise SandboxError(f"{tool}: named workspaces are not granted to role {state.role!r} "
                           f"(set sandbox.roles.{state.role}.workspaces: true)")
    env = dict(s.env)
    secret_names = [k for k, v in env.items() if _PLACEHOLDER.search(v)]
    if secret_names:  # resolved here, after the gate, only for this tool's grants
        env = dict(wall.resolve_secrets({"env": env}, tool, state)["env"])
    secrets = {k: env.pop(k) for k in secret_names}
    digest = hashlib.sha256((code or "\0".join(act.argv)).encode()).hexdigest()
    t0 = time.perf_counter()
    with Sandbox(
        s.limits.merged(act.limits), backend=s.backend, allow_weak=s.allow_weak, env=env,
        secrets=secrets, workspace=workspace, workspaces_dir=s.workspaces_dir,
        ro_paths=s.ro_paths, rw_paths=s.rw_paths, network=s.network,
        proxy_socket=s.proxy_socket, cgroup_root=s.cgroup_root,
        premake=None if s.premake else False,
        needs=["subprocesses"] if act.argv or act.language != "python" else [],
    ) as sb:
        for name, data in (files or {}).items():
            sb.write_file(name, data)
        if act.argv:
            result = sb.run(act.argv, stdin=stdin)
        else:
            result = sb.run_code(act.code, language=act.language, stdin=stdin)
    outcome = {
        "backend": result.backend, "exit_code": result.exit_code,
        "error": result.error.value if result.error else None,
        "stdout_sha256": hashlib.sha256(result.stdout.encode()).hexdigest(),
        "wall_s": round(result.usage.wall_s, 4),
    }
    wall.gate.record_outcome(
        state, ToolCall(tool, {"language": act.language, "code_sha256": digest,
                               "argv": list(act.argv)[:1]}),
        result=outcome, duration_ms=(time.perf_counter() - t0) * 1000)
    return result
