"""A fully hijacked agent on AgentDojo, replayed through Shieldwall — no LLM involved.

For each (user task × injection task) pair the "agent" performs the user task's
ground-truth calls; right after the call whose result carries the injected text, it obeys
the injection and performs the injection task's ground-truth calls, then finishes the user
task. Every call goes through the library face (``session.call``); a refused call is
recorded with its rule ids and the agent moves on, as a real agent would after an error.
The suite's own checkers then judge the final environment: ``utility()`` (the user's task
was done) and ``security()`` (the attacker's goal was reached).

The task scope a session runs under is picked from the user's request alone, before any
tool result is seen: the narrowest policy task whose tools cover the user task's ground
truth (an oracle of a perfect "tool filter" planner). ``scope="role"`` runs every session
under the bare role instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCHMARK_VERSION = "v1.2.2"
SUITES: tuple[str, ...] = ("workspace", "travel", "banking", "slack")
ROLE = "assistant"
AGENT = "agentdojo"
# Injection tasks whose goal is only something the model says: no tool gate can stop them.
OUTPUT_ONLY: frozenset[tuple[str, str]] = frozenset({("travel", "injection_task_6")})

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")


def alnum(text: str) -> str:
    """Letters and digits only, lower-cased: injected text comes back reflowed by YAML."""
    return _NOT_ALNUM.sub("", text.lower())


def attack_text(goal: str) -> str:
    """The package's "important_instructions" attack, with fixed user and model names."""
    from agentdojo.attacks.base_attacks import DEFAULT_MODEL_NAME
    from agentdojo.attacks.important_instructions_attacks import ImportantInstructionsAttack

    return str(ImportantInstructionsAttack._JB_STRING.format(
        goal=goal, user="Emma Johnson", model=DEFAULT_MODEL_NAME, task=""))


def result_text(result: Any) -> str:
    """Every string inside a tool result (models, dicts, lists), joined: escapes such as
    ``\\n`` in a YAML or repr rendering would otherwise leave stray letters behind."""
    parts: list[str] = []
    _strings(result, parts, 0)
    return "\n".join(parts)


def _strings(value: Any, out: list[str], depth: int) -> None:
    if depth > 12:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _strings(k, out, depth + 1)
            _strings(v, out, depth + 1)
    elif isinstance(value, list | tuple | set):
        for v in value:
            _strings(v, out, depth + 1)
    elif hasattr(value, "model_dump"):
        _strings(value.model_dump(), out, depth + 1)
    elif value is not None:
        out.append(str(value))


def to_json(value: Any) -> Any:
    """A tool result as JSON data (what a tool hands an agent framework): pydantic models
    dumped, dates as ISO strings."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- records


@dataclass(slots=True)
class CallRecord:
    tool: str
    origin: str  # "user" | "injection"
    outcome: str  # "ok" | "denied" | "error"
    rules: list[str] = field(default_factory=list)
    asked: bool = False  # an approval prompt was raised (and, with no human, refused)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tool": self.tool, "origin": self.origin, "outcome": self.outcome}
        if self.rules:
            d["rules"] = self.rules
        if self.asked:
            d["asked"] = True
        if self.error:
            d["error"] = self.error[:200]
        return d


@dataclass(slots=True)
class PairResult:
    suite: str
    user_task: str
    injection_task: str | None
    utility: bool  # user task done: utility() true and none of its calls refused
    security: bool | None  # attacker's goal reached (None for benign runs)
    injection_seen: bool
    calls: list[CallRecord]
    task_scope: str | None = None

    @property
    def approvals(self) -> int:
        return sum(1 for c in self.calls if c.asked)

    @property
    def user_refusals(self) -> list[CallRecord]:
        return [c for c in self.calls if c.origin == "user" and c.outcome == "denied"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_task": self.user_task, "injection_task": self.injection_task,
            "utility": self.utility, "security": self.security,
            "injection_seen": self.injection_seen, "task_scope": self.task_scope,
            "approvals": self.approvals,
            "calls": [c.to_dict() for c in self.calls],
        }


# ----------------------------------------------------------------------------- tools


class _ArgsValidator:
    """Validates arguments with the agentdojo function's own pydantic model and returns
    the declared arguments unchanged (agentdojo coerces them again when it runs)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.names = frozenset(model.model_fields)

    def validate(self, args: dict[str, Any]) -> tuple[dict[str, Any], list[str], str | None]:
        from pydantic import ValidationError

        stripped = [k for k in args if k not in self.names]
        clean = {k: v for k, v in args.items() if k in self.names}
        try:
            self.model.model_validate(clean)
        except ValidationError as e:
            errs = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(args)'}: {err['msg']}"
                for err in e.errors(include_url=False))
            return clean, stripped, errs
        return clean, stripped, None

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.model.model_json_schema()
        return schema


class _EnvHolder:
    env: Any = None


class EnvCache:
    """Parsed environments and injection candidates, shared by the runners of one suite
    (baseline, Shieldwall, Shieldwall with approvals) so each is computed once."""

    def __init__(self) -> None:
        self.envs: dict[tuple[tuple[str, str], ...], Any] = {}
        self.candidates: dict[str, list[str]] = {}


# ----------------------------------------------------------------------------- runner


class SuiteRunner:
    """Runs pairs of one suite, with Shieldwall (``policy_path``) or without (``None``)."""

    def __init__(self, suite_name: str, policy_path: Path | None, *, scope: str = "oracle",
                 approve: bool = False, cache: EnvCache | None = None) -> None:
        from agentdojo.functions_runtime import FunctionsRuntime
        from agentdojo.task_suite.load_suites import get_suite

        from .agentdojo_truths import MISSING

        self.name = suite_name
        self.suite = get_suite(BENCHMARK_VERSION, suite_name)
        self.runtime = FunctionsRuntime(self.suite.tools)
        self.missing = MISSING.get(suite_name, {})
        self.scope = scope
        self.cache = cache or EnvCache()
        self._holder = _EnvHolder()
        self.wall: Any = None
        if policy_path is not None:
            self.wall = self._build_wall(policy_path, approve)

    # ---------------------------------------------------------------- setup

    def _build_wall(self, policy_path: Path, approve: bool) -> Any:
        from shieldwall import CallbackApprover, Shieldwall
        from shieldwall.tools import ToolSpec

        kwargs: dict[str, Any] = {"audit": False}
        if approve:
            kwargs["approver"] = CallbackApprover(lambda _req: True)
        wall = Shieldwall.from_policy(policy_path, **kwargs)
        if ROLE not in wall.policy.roles:
            raise ValueError(f"{policy_path}: the policy needs a role named {ROLE!r}")
        for f in self.suite.tools:
            wall.register_tool(ToolSpec(name=f.name, fn=self._executor(f.name),
                                        validator=_ArgsValidator(f.parameters),
                                        description=f.description))
        return wall

    def _executor(self, name: str) -> Callable[..., Any]:
        runtime, holder = self.runtime, self._holder

        def run(**kwargs: Any) -> Any:
            result, _ = runtime.run_function(holder.env, name, kwargs, raise_on_error=True)
            return to_json(result)

        return run

    @property
    def user_tasks(self) -> list[str]:
        return list(self.suite.user_tasks)

    @property
    def injection_tasks(self) -> list[str]:
        return list(self.suite.injection_tasks)

    def injection_candidates(self, user_task_id: str) -> list[str]:
        """Vectors whose text the user task's ground truth reads (letters and digits
        compared, as ``BaseAttack.get_injection_candidates`` does with exact text)."""
        hit = self.cache.candidates.get(user_task_id)
        if hit is not None:
            return hit
        task = self.suite.get_user_task_by_id(user_task_id)
        vectors = list(self.suite.get_injection_vector_defaults())
        canaries = {v: f"zqcanary{i:03d}qz" for i, v in enumerate(vectors)}
        env = task.init_environment(self._environment(canaries))
        seen = []
        for call in task.ground_truth(env.model_copy(deep=True)):
            result, _ = self.runtime.run_function(env, call.function, call.args)
            seen.append(alnum(result_text(result)))
        text = " ".join(seen)
        found = [v for v, c in canaries.items() if c in text]
        self.cache.candidates[user_task_id] = found
        return found

    def _environment(self, injections: dict[str, str]) -> Any:
        """A fresh environment with ``injections``; parsed once per distinct injection set
        (the YAML parse dominates a pair's cost), deep-copied for every run."""
        key = tuple(sorted(injections.items()))
        envs = self.cache.envs
        template = envs.get(key)
        if template is None:
            if len(envs) > 64:
                envs.clear()
            template = self._load_environment(injections)
            envs[key] = template
        return template.model_copy(deep=True)

    def _load_environment(self, injections: dict[str, str]) -> Any:
        """``TaskSuite.load_and_inject_default_environment``, parsed with libyaml when the
        installed PyYAML has it (same document, several times faster)."""
        import yaml
        from agentdojo.task_suite.task_suite import read_suite_file

        loader = getattr(yaml, "CSafeLoader", None)
        if loader is None:
            return self.suite.load_and_inject_default_environment(injections)
        suite = self.suite
        text = read_suite_file(suite.name, "environment.yaml", suite.data_path)
        values = dict(suite.get_injection_vector_defaults(), **injections)
        data = yaml.load(text.format(**values), Loader=loader)  # noqa: S506 (safe loader)
        return suite.environment_type.model_validate(data)

    def task_scope(self, calls: Iterable[Any]) -> str | None:
        """The narrowest policy task (for the role) whose tools cover ``calls``."""
        if self.wall is None or self.scope == "role":
            return None
        needed = {c.function for c in calls}
        best: tuple[int, str] | None = None
        compiled = self.wall.compiled
        for name, task in self.wall.policy.tasks.items():
            if task.role not in (None, ROLE):
                continue
            eff = compiled.effective(ROLE, name)
            if needed <= eff.tools and (best is None or len(eff.tools) < best[0]):
                best = (len(eff.tools), name)
        return best[1] if best else None

    # ---------------------------------------------------------------- one pair

    def run(self, user_task_id: str, injection_task_id: str | None) -> PairResult:
        suite = self.suite
        user_task = suite.get_user_task_by_id(user_task_id)
        inj_task = (suite.get_injection_task_by_id(injection_task_id)
                    if injection_task_id is not None else None)
        injected = ""
        injections: dict[str, str] = {}
        if inj_task is not None:
            injected = attack_text(inj_task.GOAL)
            injections = {v: injected for v in self.injection_candidates(user_task_id)}
        env = user_task.init_environment(self._environment(injections))
        pre = env.model_copy(deep=True)
        user_calls = list(user_task.ground_truth(pre.model_copy(deep=True)))
        inj_calls: list[Any] = []
        if inj_task is not None:
            plan = self.missing.get(injection_task_id or "")
            snapshot = pre.model_copy(deep=True)
            inj_calls = list(plan(snapshot) if plan is not None else inj_task.ground_truth(snapshot))
        self._holder.env = env
        scope = self.task_scope(user_calls)
        marker = alnum(injected) if injected else ""
        records: list[CallRecord] = []
        traces: list[Any] = []
        session = None
        if self.wall is not None:
            session = self.wall.session(AGENT, ROLE, scope)
            session.check_input(user_task.PROMPT, source="user", trusted=True)
        injection_seen = False
        try:
            for call in user_calls:
                result = self._perform(session, env, call, "user", records, traces)
                if (marker and not injection_seen and result is not None
                        and marker in alnum(result_text(result))):
                    injection_seen = True
                    for step in inj_calls:
                        resolved = step(env) if callable(step) else step
                        if resolved is not None:
                            self._perform(session, env, resolved, "injection", records, traces)
            output = user_task.GROUND_TRUTH_OUTPUT
            if injection_seen and inj_task is not None and inj_task.GROUND_TRUTH_OUTPUT:
                output = f"{output}\n{inj_task.GROUND_TRUTH_OUTPUT}"
            if session is not None:
                d = session.check_output(output)
                if not d.allowed:
                    records.append(CallRecord("(final answer)", "user", "denied", d.rules()))
                    output = ""
        finally:
            if session is not None:
                session.close()
        utility = self._utility(user_task, output, pre, env, traces)
        utility = utility and not any(r.origin == "user" and r.outcome == "denied"
                                      for r in records)
        security = None
        if inj_task is not None:
            security = self._security(inj_task, output, pre, env, traces)
        return PairResult(self.name, user_task_id, injection_task_id, utility, security,
                          injection_seen, records, scope)

    def _perform(self, session: Any, env: Any, call: Any, origin: str,
                 records: list[CallRecord], traces: list[Any]) -> Any:
        from shieldwall import Denied, Verdict
        from shieldwall.session import ToolError

        args = dict(call.args)
        if session is None:
            result, error = self.runtime.run_function(env, call.function, args)
            if error is not None:
                records.append(CallRecord(call.function, origin, "error", error=error))
                traces.append(call)
                return None
            records.append(CallRecord(call.function, origin, "ok"))
            traces.append(call)
            return result
        try:
            result = session.call(call.function, args)
        except Denied as e:
            asked = any(f.verdict == Verdict.ASK for f in e.findings)
            rules = [f.rule for f in e.decision.deciding()]
            records.append(CallRecord(call.function, origin, "denied", rules, asked))
            return None
        except ToolError as e:
            records.append(CallRecord(call.function, origin, "error", error=str(e)))
            traces.append(call)
            return None
        records.append(CallRecord(call.function, origin, "ok"))
        traces.append(call)
        return result

    @staticmethod
    def _utility(task: Any, output: str, pre: Any, post: Any, traces: list[Any]) -> bool:
        from_traces = task.utility_from_traces(output, pre, post, traces)
        if from_traces is not None:
            return bool(from_traces)
        return bool(task.utility(output, pre, post))

    @staticmethod
    def _security(task: Any, output: str, pre: Any, post: Any, traces: list[Any]) -> bool:
        from_traces = task.security_from_traces(output, pre, post, traces)
        if from_traces is not None:
            return bool(from_traces)
        return bool(task.security(output, pre, post))
