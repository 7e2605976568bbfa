"""The monitor: watches every decision and pulls the kill switch on a session (or agent)
that keeps hitting the gate's walls.

A hijacked agent probes: it tries a tool, is refused, tries another. Each refusal alone is
harmless; a burst of them is the signal. Refusals spend a token bucket per session
(``max_denials`` tokens, refilled over ``window`` seconds); when it is empty the session —
or the whole agent — is revoked through the wall's store, so every gateway worker sharing
that store refuses it from the next action on (rule ``identity.revoked``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..actions import Decision, Verdict

if TYPE_CHECKING:
    from ..policy.model import MonitorSettings
    from ..session import SessionState
    from ..wall import Shieldwall


class Monitor:
    def __init__(self, wall: Shieldwall, settings: MonitorSettings) -> None:
        self.wall = wall
        self.settings = settings
        self.killed: list[str] = []

    def observe(self, decision: Decision, session: SessionState) -> None:
        s = self.settings
        if not s.enabled or decision.verdict != Verdict.DENY:
            return
        if any(f.rule == "identity.revoked" for f in decision.findings):
            return  # already killed; do not count the echo
        ok, _ = self.wall.store.bucket(f"mon:{session.id}", s.max_denials / s.window,
                                       s.max_denials, session.now())
        if ok:
            return
        if s.kill == "agent":
            self.wall.kill(agent=session.agent)
            target = f"agent {session.agent}"
        else:
            self.wall.kill(session=session.id)
            target = f"session {session.id}"
        self.killed.append(target)
        self.wall.gate.record_event(session, "monitor.kill",
                                    f"{target} revoked after more than {s.max_denials} refusals "
                                    f"within {s.window:g}s")
