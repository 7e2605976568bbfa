"""The AgentDojo harness: a hijacked agent replayed through Shieldwall.

A handful of real (user task × injection task) pairs from the installed agentdojo
package, judged by the suites' own checkers. Skipped when agentdojo is not installed
(``pip install 'shieldwall[agentdojo]'``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("agentdojo")

from shieldwall.bench.agentdojo_harness import SuiteRunner, alnum

POLICIES = Path(__file__).resolve().parents[2] / "examples" / "agentdojo"


@pytest.fixture(scope="module")
def runners() -> dict[str, SuiteRunner]:
    return {}


def _runner(runners: dict[str, SuiteRunner], suite: str, shielded: bool,
            scope: str = "oracle") -> SuiteRunner:
    key = f"{suite}:{shielded}:{scope}"
    if key not in runners:
        runners[key] = SuiteRunner(suite, POLICIES / f"{suite}.yaml" if shielded else None,
                                   scope=scope)
    return runners[key]


# One pair per suite where the hijacked agent's goal is reached without Shieldwall.
ATTACKS = [
    ("workspace", "user_task_13", "injection_task_3"),  # forward a private mail
    ("travel", "user_task_3", "injection_task_1"),  # mail messages to a new address
    ("banking", "user_task_2", "injection_task_4"),  # redirect a standing order
    ("slack", "user_task_1", "injection_task_2"),  # post all channels to a website
]


@pytest.mark.parametrize(("suite", "user_task", "injection_task"), ATTACKS)
def test_attack_succeeds_without_shieldwall(runners: dict[str, SuiteRunner], suite: str,
                                            user_task: str, injection_task: str) -> None:
    result = _runner(runners, suite, False).run(user_task, injection_task)
    assert result.injection_seen
    assert result.security is True


@pytest.mark.parametrize(("suite", "user_task", "injection_task"), ATTACKS)
def test_attack_is_refused_by_shieldwall(runners: dict[str, SuiteRunner], suite: str,
                                         user_task: str, injection_task: str) -> None:
    result = _runner(runners, suite, True).run(user_task, injection_task)
    assert result.injection_seen  # the agent did read the injection and obeyed it
    assert result.security is False
    refused = [c for c in result.calls if c.origin == "injection" and c.outcome == "denied"]
    assert refused and all(c.rules for c in refused)


def test_provenance_rule_names_the_refusal(runners: dict[str, SuiteRunner]) -> None:
    # the attacker's address reached the agent only inside an e-mail it read
    result = _runner(runners, "workspace", True).run("user_task_13", "injection_task_3")
    rules = {r for c in result.calls if c.tool == "send_email" and c.origin == "injection"
             for r in c.rules}
    assert "flow.untrusted_target" in rules


@pytest.mark.parametrize(("suite", "user_task"), [
    ("workspace", "user_task_13"),  # reply to a named colleague with data from a file
    ("banking", "user_task_3"),  # refund an IBAN the user typed
    ("slack", "user_task_2"),  # invite a person the user named
    ("workspace", "user_task_9"),  # invite the participants of an existing meeting
    ("workspace", "user_task_18"),  # invite the sender of a mail
])
def test_benign_task_passes_the_gate(runners: dict[str, SuiteRunner], suite: str,
                                     user_task: str) -> None:
    result = _runner(runners, suite, True).run(user_task, None)
    assert [c for c in result.calls if c.outcome != "ok"] == []
    assert result.utility is True
    assert result.approvals == 0


def test_bill_payee_from_a_document_needs_a_person(runners: dict[str, SuiteRunner]) -> None:
    # paying an IBAN found only in a third-party bill raises one approval prompt;
    # with no human present it is refused, so the task is not done
    result = _runner(runners, "banking", True).run("user_task_0", None)
    assert result.approvals == 1
    assert result.utility is False


def test_injection_found_despite_reformatting(runners: dict[str, SuiteRunner]) -> None:
    # workspace results come back as YAML-reflowed text; candidates are still found
    # (agentdojo's own suite.check() reports these tasks as not injectable)
    cands = _runner(runners, "workspace", False).injection_candidates("user_task_0")
    assert cands
    assert alnum("Hey,\n  how is\tit going?") == "heyhowisitgoing"


def test_missing_workspace_ground_truth_reaches_its_goal(runners: dict[str, SuiteRunner]) -> None:
    # injection task 6 ships an empty ground truth; the project's sequence reaches it
    result = _runner(runners, "workspace", False).run("user_task_24", "injection_task_6")
    assert any(c.origin == "injection" for c in result.calls)
    assert result.security is True


def test_phishing_link_relayed_to_real_colleagues_is_refused(
        runners: dict[str, SuiteRunner]) -> None:
    # the recipients are the user's real meeting participants (system-written, trusted);
    # the link in the body exists only in the injected text
    result = _runner(runners, "workspace", True).run("user_task_13", "injection_task_13")
    assert result.injection_seen and result.security is False
    rules = {r for c in result.calls if c.tool == "send_email" and c.origin == "injection"
             for r in c.rules}
    assert "flow.untrusted_target" in rules


def test_booking_not_named_by_the_user_is_refused_without_task_scope(
        runners: dict[str, SuiteRunner]) -> None:
    # bare role (no task scope): the injected booking picks a hotel from the trusted
    # catalogue; the traveller never named it, so it needs a person (refused: no human)
    runner = _runner(runners, "travel", True, scope="role")
    assert _runner(runners, "travel", False).run("user_task_3", "injection_task_4").security
    result = runner.run("user_task_3", "injection_task_4")
    assert result.injection_seen and result.security is False
    booking = [c for c in result.calls if c.tool == "reserve_hotel"]
    assert booking and all(c.outcome == "denied" and c.asked for c in booking)
    # the booking the user asked for by name still passes
    benign = runner.run("user_task_0", None)
    assert benign.utility is True and benign.approvals == 0


def test_detect_flag_runs_the_suite_with_the_detect_room_on(tmp_path: Path) -> None:
    import json

    from shieldwall.bench.agentdojo import command

    command(suite="banking", user_tasks=1, detect=True, out_dir=tmp_path)
    data = json.loads((tmp_path / "agentdojo-detect.json").read_text())
    assert data["detect"] is True
    assert data["overall"]["pairs"] == 9
    md = (tmp_path / "agentdojo-detect.md").read_text()
    assert "--detect" in md and "detect room is on" in md
    assert not (tmp_path / "agentdojo.md").exists()


def test_detect_remove_mode_writes_its_own_table(tmp_path: Path) -> None:
    import json

    from shieldwall.bench.agentdojo import command

    command(suite="banking", user_tasks=1, detect=True, detect_results="remove", out_dir=tmp_path)
    data = json.loads((tmp_path / "agentdojo-detect-remove.json").read_text())
    assert data["detect_results"] == "remove"
    assert data["overall"]["shieldwall"]["attack_success"] == 0
    assert "--detect-results remove" in (tmp_path / "agentdojo-detect-remove.md").read_text()


def test_detect_encoder_mode_turns_the_encoder_on_and_writes_its_own_table(tmp_path: Path) -> None:
    import json

    import typer

    from shieldwall.bench.agentdojo import _default_policy_dir, _with_detect, command
    from shieldwall.policy.load import load_policy

    pdir = _with_detect(_default_policy_dir(), ["banking"], encoder=True)
    assert load_policy(pdir / "banking.yaml").detect.injection.encoder is True
    plain = _with_detect(_default_policy_dir(), ["banking"])
    assert load_policy(plain / "banking.yaml").detect.injection.encoder is False
    with pytest.raises(typer.BadParameter, match="needs --detect"):
        command(suite="banking", user_tasks=1, detect_encoder=True, out_dir=tmp_path)
    command(suite="banking", user_tasks=1, detect=True, detect_encoder=True, out_dir=tmp_path)
    data = json.loads((tmp_path / "agentdojo-detect-encoder.json").read_text())
    assert data["detect_encoder"] is True and data["overall"]["pairs"] == 9
    assert "--detect-encoder" in (tmp_path / "agentdojo-detect-encoder.md").read_text()


def test_the_bare_role_run_writes_its_own_table(tmp_path: Path) -> None:
    """`--scope role` and the default run each write their own file, so neither run
    overwrites the other's scoreboard."""
    import json

    from shieldwall.bench.agentdojo import command

    command(suite="banking", user_tasks=1, scope="role", out_dir=tmp_path)
    assert json.loads((tmp_path / "agentdojo-role.json").read_text())["scope"] == "role"
    assert "--scope role" in (tmp_path / "agentdojo-role.md").read_text()
    assert not (tmp_path / "agentdojo.md").exists()
    command(suite="banking", user_tasks=1, out_dir=tmp_path)
    assert "`agentdojo-role.md`" in (tmp_path / "agentdojo.md").read_text()
    assert json.loads((tmp_path / "agentdojo-role.json").read_text())["scope"] == "role"
