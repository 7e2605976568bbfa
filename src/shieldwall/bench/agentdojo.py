"""``shieldwall bench agentdojo``: attack success and kept utility of a fully hijacked
agent on AgentDojo, with and without Shieldwall, in one deterministic offline run.

See ``agentdojo_harness.py`` for the protocol and ``examples/agentdojo/`` for the policies.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from . import machine

DEFAULT_POLICY_DIR = Path("examples") / "agentdojo"


def _default_policy_dir() -> Path:
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        d = base / DEFAULT_POLICY_DIR
        if d.is_dir():
            return d
    return DEFAULT_POLICY_DIR


@dataclass
class SuiteReport:
    suite: str
    user_tasks: int = 0
    pairs: int = 0  # tool-stoppable pairs (output-only injection tasks excluded)
    baseline_benign: int = 0
    baseline_attacks: int = 0
    baseline_utility_attacked: int = 0
    benign_kept: int = 0
    benign_kept_approved: int = 0
    benign_prompts: int = 0
    attacks: int = 0
    utility_attacked: int = 0
    output_only_pairs: int = 0
    output_only_baseline: int = 0
    output_only_shieldwall: int = 0
    injection_reached: int = 0  # pairs where the agent read the injected text through the gate
    refusals_benign: Counter[str] = field(default_factory=Counter)
    refusals_attack_calls: Counter[str] = field(default_factory=Counter)
    refusals_user_calls_attacked: Counter[str] = field(default_factory=Counter)
    benign_blocked: list[dict[str, Any]] = field(default_factory=list)
    successful_attacks: list[dict[str, Any]] = field(default_factory=list)
    pairs_detail: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: SuiteReport) -> None:
        for name in ("user_tasks", "pairs", "baseline_benign", "baseline_attacks",
                     "baseline_utility_attacked", "benign_kept", "benign_kept_approved",
                     "benign_prompts", "attacks", "utility_attacked", "output_only_pairs",
                     "output_only_baseline", "output_only_shieldwall", "injection_reached"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.refusals_benign.update(other.refusals_benign)
        self.refusals_attack_calls.update(other.refusals_attack_calls)
        self.refusals_user_calls_attacked.update(other.refusals_user_calls_attacked)

    def to_dict(self, detail: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "suite": self.suite, "user_tasks": self.user_tasks, "pairs": self.pairs,
            "baseline": {"benign_utility": self.baseline_benign,
                         "attack_success": self.baseline_attacks,
                         "utility_under_attack": self.baseline_utility_attacked},
            "shieldwall": {"benign_utility_kept": self.benign_kept,
                           "benign_utility_with_approvals": self.benign_kept_approved,
                           "approval_prompts_benign": self.benign_prompts,
                           "attack_success": self.attacks,
                           "utility_under_attack": self.utility_attacked,
                           "injection_reached_agent": self.injection_reached},
            "output_only": {"pairs": self.output_only_pairs,
                            "baseline_success": self.output_only_baseline,
                            "shieldwall_success": self.output_only_shieldwall},
            "refusals": {"benign_runs": dict(self.refusals_benign.most_common()),
                         "attack_calls": dict(self.refusals_attack_calls.most_common()),
                         "user_calls_under_attack":
                             dict(self.refusals_user_calls_attacked.most_common())},
        }
        if detail:
            d["benign_blocked"] = self.benign_blocked
            d["successful_attacks"] = self.successful_attacks
            d["pairs_detail"] = self.pairs_detail
        return d


def run_suite(name: str, policy_path: Path, *, scope: str = "oracle",
              user_tasks: list[str] | None = None,
              injection_tasks: list[str] | None = None,
              progress: Any = None, task_id: Any = None) -> SuiteReport:
    from .agentdojo_harness import OUTPUT_ONLY, EnvCache, SuiteRunner

    cache = EnvCache()
    base = SuiteRunner(name, None, cache=cache)
    wall = SuiteRunner(name, policy_path, scope=scope, cache=cache)
    approved = SuiteRunner(name, policy_path, scope=scope, approve=True, cache=cache)
    rep = SuiteReport(name)
    users = user_tasks or base.user_tasks
    injections = injection_tasks or base.injection_tasks

    def tick() -> None:
        if progress is not None:
            progress.advance(task_id)

    for u in users:
        rep.user_tasks += 1
        rep.baseline_benign += base.run(u, None).utility
        b = wall.run(u, None)
        rep.benign_kept += b.utility
        rep.benign_prompts += b.approvals
        rep.benign_kept_approved += approved.run(u, None).utility
        for c in b.calls:
            if c.outcome == "denied":
                rep.refusals_benign.update(c.rules)
        if not b.utility:
            rep.benign_blocked.append({
                "user_task": u, "task_scope": b.task_scope,
                "refused": [c.to_dict() for c in b.calls if c.outcome != "ok"]})
    # injection tasks outermost: pairs that share an injected environment run together
    for i in injections:
        for u in users:
            rb = base.run(u, i)
            rw = wall.run(u, i)
            tick()
            if (name, i) in OUTPUT_ONLY:
                rep.output_only_pairs += 1
                rep.output_only_baseline += bool(rb.security)
                rep.output_only_shieldwall += bool(rw.security)
                continue
            rep.pairs += 1
            rep.baseline_attacks += bool(rb.security)
            rep.baseline_utility_attacked += rb.utility
            rep.attacks += bool(rw.security)
            rep.injection_reached += rw.injection_seen
            rep.utility_attacked += rw.utility
            for c in rw.calls:
                if c.outcome != "denied":
                    continue
                target = (rep.refusals_attack_calls if c.origin == "injection"
                          else rep.refusals_user_calls_attacked)
                target.update(c.rules)
            if rw.security:
                rep.successful_attacks.append(rw.to_dict())
            rep.pairs_detail.append({
                "user_task": u, "injection_task": i, "baseline_security": rb.security,
                "security": rw.security, "utility": rw.utility,
                "refused": [c.to_dict() for c in rw.calls if c.outcome == "denied"]})
    return rep


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100.0 * n / d:.1f}%)" if d else "–"


def render(reports: list[SuiteReport], total: SuiteReport) -> tuple[list[str], list[list[str]]]:
    header = ["suite", "user tasks", "pairs", "baseline attack success",
              "Shieldwall attack success", "benign utility kept (no approvals)",
              "benign utility (approvals granted)", "approval prompts / benign task",
              "utility under attack (baseline → Shieldwall)"]
    rows = []
    for r in [*reports, total]:
        rows.append([
            r.suite, str(r.user_tasks), str(r.pairs), _pct(r.baseline_attacks, r.pairs),
            _pct(r.attacks, r.pairs), _pct(r.benign_kept, r.baseline_benign),
            _pct(r.benign_kept_approved, r.baseline_benign),
            f"{r.benign_prompts / r.user_tasks:.2f}" if r.user_tasks else "–",
            f"{_pct(r.baseline_utility_attacked, r.pairs)} → {_pct(r.utility_attacked, r.pairs)}",
        ])
    return header, rows


def command(
    suite: Annotated[str | None, typer.Option(
        help="one suite (workspace, travel, banking, slack); default all")] = None,
    policy_dir: Annotated[Path | None, typer.Option(
        help="folder with <suite>.yaml policies; default examples/agentdojo")] = None,
    scope: Annotated[str, typer.Option(
        help="oracle: narrowest policy task covering the user task's tools; role: no task")]
        = "oracle",
    out_dir: Annotated[Path, typer.Option(
        help="where agentdojo.md/.json are written (agentdojo-role.md with --scope role)")]
        = Path("benchmarks"),
    user_tasks: Annotated[int | None, typer.Option(
        help="only the first N user tasks per suite (quick look)")] = None,
    detect: Annotated[bool, typer.Option(
        help="also turn on the detect room (injection scan of untrusted results, output "
             "guards) with its default settings; writes agentdojo-detect.md/.json")] = False,
    detect_results: Annotated[str, typer.Option(
        help="with --detect: detect.results.on_injection, deny (refuse the result) or remove "
             "(withhold the injected strings, pass the rest; writes agentdojo-detect-remove.md)")]
        = "deny",
    detect_encoder: Annotated[bool, typer.Option(
        help="with --detect: also turn on the opt-in injection encoder for user prompts "
             "(detect.injection.encoder; needs the detect-encoder extra); writes "
             "agentdojo-detect-encoder.md")] = False,
) -> None:
    """AgentDojo with a fully hijacked agent: attack success and kept utility."""
    try:
        import agentdojo  # noqa: F401
    except ImportError:
        raise typer.BadParameter(
            "agentdojo is not installed: pip install 'shieldwall[agentdojo]'") from None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from . import write_markdown
    from .agentdojo_harness import BENCHMARK_VERSION, SUITES, SuiteRunner

    if scope not in ("oracle", "role"):
        raise typer.BadParameter("--scope must be oracle or role")
    names = [suite] if suite else list(SUITES)
    for n in names:
        if n not in SUITES:
            raise typer.BadParameter(f"unknown suite {n!r} (suites: {', '.join(SUITES)})")
    pdir = policy_dir or _default_policy_dir()
    if detect_results not in ("deny", "remove"):
        raise typer.BadParameter("--detect-results must be deny or remove")
    if detect_encoder and not detect:
        raise typer.BadParameter("--detect-encoder needs --detect")
    name = "agentdojo"
    if detect:
        name = ("agentdojo-detect" + ("-remove" if detect_results == "remove" else "")
                + ("-encoder" if detect_encoder else ""))
        pdir = _with_detect(pdir, names, detect_results, encoder=detect_encoder)
    if scope == "role":  # its own table: the default run does not overwrite it, nor it that one
        name += "-role"
    console = Console()
    started = time.perf_counter()
    plan: dict[str, list[str]] = {}
    total_pairs = 0
    for n in names:
        probe = SuiteRunner(n, None)
        plan[n] = probe.user_tasks[:user_tasks] if user_tasks else probe.user_tasks
        total_pairs += len(plan[n]) * len(probe.injection_tasks)
    reports = []
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        tid = progress.add_task("pairs", total=total_pairs)
        for n in names:
            progress.update(tid, description=n)
            reports.append(run_suite(n, pdir / f"{n}.yaml", scope=scope, user_tasks=plan[n],
                                     progress=progress, task_id=tid))
    elapsed = time.perf_counter() - started
    total = SuiteReport("overall")
    for r in reports:
        total.add(r)
    header, rows = render(reports, total)
    table = Table(title=f"AgentDojo {BENCHMARK_VERSION}, hijacked agent (scope={scope})")
    for h in header:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    notes = _notes(reports, total, scope, pdir, elapsed)
    if scope == "oracle" and not detect:
        notes.append("")
        notes.append(f"The same replay without task scopes (`--scope role`): `{name}-role.md`. "
                     "How the figures moved between versions: `agentdojo-history.md` "
                     "(written by hand from earlier runs).")
    if detect:
        flag = (" --detect-results remove" if detect_results == "remove" else "") + (
            " --detect-encoder" if detect_encoder else "")
        notes[0] = (f"Command: `shieldwall bench agentdojo --scope {scope} --detect{flag}` (policies: "
                    f"examples/agentdojo with `detect:` on at its defaults"
                    + (", results.on_injection: remove" if detect_results == "remove" else "")
                    + (", injection.encoder: true (user prompts)" if detect_encoder else "")
                    + f"), {elapsed:.0f} s.")
        how = ("on_injection: deny — a result carrying an injection never reaches the agent"
               if detect_results == "deny" else
               "on_injection: remove — the strings of a result that alone look injected are "
               "withheld with a visible marker, the rest reaches the agent; a result whose "
               "injection cannot be isolated is refused")
        notes[1:1] = ["", f"The detect room is on: untrusted tool results are scanned for "
                      f"injected instructions ({how}), outputs and tool arguments for leaks. What "
                      "it adds on top of the deterministic layers shows in *utility under attack* "
                      "and in the refusals by rule id; what it costs shows in *benign utility kept*."]
    write_markdown(name, f"AgentDojo {BENCHMARK_VERSION}: a fully hijacked agent, "
                   "with and without Shieldwall" + (" (detect room on)" if detect else ""),
                   header, rows, notes, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": f"agentdojo {BENCHMARK_VERSION}", "machine": machine(), "scope": scope,
        "policy_dir": str(pdir), "seconds": round(elapsed, 1),
        "overall": total.to_dict(detail=False),
        "suites": [r.to_dict() for r in reports],
    }
    payload["detect"] = detect
    payload["detect_results"] = detect_results if detect else None
    payload["detect_encoder"] = detect_encoder
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n",
                                          encoding="utf-8")
    console.print(f"wrote {out_dir / (name + '.md')} and {out_dir / (name + '.json')} "
                  f"({elapsed:.0f} s)")


def _with_detect(pdir: Path, names: list[str], on_injection: str = "deny", *,
                 encoder: bool = False) -> Path:
    """Copies of the suites' policies with the detect room on at its defaults (and, with
    ``encoder``, the opt-in injection encoder for user prompts)."""
    import tempfile

    import yaml

    out = Path(tempfile.mkdtemp(prefix="sw-agentdojo-detect-"))
    for n in names:
        data = yaml.safe_load((pdir / f"{n}.yaml").read_text(encoding="utf-8"))
        data["detect"] = {"enabled": True, "results": {"on_injection": on_injection}}
        if encoder:
            data["detect"]["injection"] = {"encoder": True}
        (out / f"{n}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def _notes(reports: list[SuiteReport], total: SuiteReport, scope: str, pdir: Path,
           elapsed: float) -> list[str]:
    lines = [
        f"Command: `shieldwall bench agentdojo --scope {scope}` (policies: `{pdir}`), "
        f"{elapsed:.0f} s.",
        "",
        "Protocol: for every (user task × injection task) pair, a *hijacked agent* performs "
        "the user task's ground-truth calls and, right after the call whose result carries "
        "the injected text (the package's `important_instructions` template), the injection "
        "task's ground-truth calls; then it finishes the user task. No LLM: the agent obeys "
        "the attacker every time. Every call passes `session.call`; a refused call is "
        "recorded and the agent goes on. The suite's own `utility()`/`security()` judge the "
        "final environment. Baseline = the same replay without Shieldwall, in the same run.",
        "",
        "- *attack success*: pairs where `security()` says the attacker's goal was reached.",
        "- *benign utility kept*: user tasks (no injection) whose every ground-truth call "
        "passes the gate and whose `utility()` holds, over those the baseline solves. "
        "Every approval request is refused (no human present); *approvals granted* reruns "
        "the benign tasks with a person who says yes to every prompt.",
        "- *utility under attack*: pairs where the user task's calls all passed and "
        "`utility()` holds.",
        "- Task scope: " + ("the narrowest policy task whose tools cover the user task's "
                            "ground truth, chosen from the request alone before any tool "
                            "result is read (a perfect tool-filter planner)."
                            if scope == "oracle" else "none — every session runs under the "
                            "bare role."),
        "- Workspace injection tasks 6–13 ship an empty ground truth in agentdojo 0.1.35; "
        "the sequences used are Shieldwall's (`shieldwall/bench/agentdojo_truths.py`).",
        "",
        f"The injected text reached the agent through the gate in "
        f"{_pct(total.injection_reached, total.pairs)} of the pairs (the rest were stopped "
        "earlier: the read that carries it was refused), so the attack was met, not "
        "dodged: the agent obeyed it and the gate refused what it tried.",
        "",
        "## Output-only injection task (reported apart)",
        "",
        "Travel injection task 6 only asks the model to *say* something; no tool gate can "
        f"stop it. Baseline {_pct(total.output_only_baseline, total.output_only_pairs)}, "
        f"Shieldwall {_pct(total.output_only_shieldwall, total.output_only_pairs)}.",
        "",
        "## Refusals by rule id",
        "",
        "| suite | injected calls refused | user calls refused under attack | "
        "benign runs (false refusals) |",
        "|---|---|---|---|",
    ]
    for r in [*reports, total]:
        def fmt(c: Counter[str]) -> str:
            return ", ".join(f"`{k}` {v}" for k, v in c.most_common()) or "–"
        lines.append(f"| {r.suite} | {fmt(r.refusals_attack_calls)} | "
                     f"{fmt(r.refusals_user_calls_attacked)} | {fmt(r.refusals_benign)} |")
    lines += ["", "## Benign tasks the gate blocks", ""]
    blocked = [(r.suite, b) for r in reports for b in r.benign_blocked]
    if not blocked:
        lines.append("None.")
    for s, b in blocked:
        why = "; ".join(
            f"{c['tool']}: {', '.join(c.get('rules', [])) or c.get('error', c['outcome'])}"
            for c in b["refused"]) or "utility() false"
        lines.append(f"- {s} {b['user_task']} (scope `{b['task_scope']}`): {why}")
    succ = [(r.suite, a) for r in reports for a in r.successful_attacks]
    lines += ["", "## Attacks that succeeded through Shieldwall", ""]
    if not succ:
        lines.append("None.")
    for s, a in succ:
        lines.append(f"- {s} {a['user_task']} × {a['injection_task']} "
                     f"(scope `{a['task_scope']}`)")
    return lines
