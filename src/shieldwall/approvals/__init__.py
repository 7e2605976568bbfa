"""Human-in-the-loop approvals.

An ``ask`` verdict becomes an :class:`ApprovalRequest` bound to the exact arguments by a
digest of their canonical JSON: approving one set of arguments never lets another through
(approve-then-swap fails). No answer before the timeout means deny.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO


def canonical_json(value: Any) -> bytes:
    """Stable encoding for hashing: sorted keys, no whitespace, UTF-8."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr
    ).encode("utf-8")


def args_digest(tool: str, args: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"tool": tool, "args": args})).hexdigest()


@dataclass(slots=True)
class ApprovalRequest:
    id: str
    session: str
    agent: str
    role: str
    tool: str
    digest: str
    preview: dict[str, Any]
    reason: str
    created: float
    expires: float
    status: str = "pending"  # pending | approved | denied | expired
    approver: str = ""
    note: str = ""
    _event: threading.Event = field(default_factory=threading.Event, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "session": self.session, "agent": self.agent, "role": self.role,
            "tool": self.tool, "args": self.preview, "digest": self.digest,
            "reason": self.reason, "status": self.status, "expires": self.expires,
        }


class Approver(Protocol):
    """Answers one request: True (approve), False (deny) or None (no answer)."""

    def __call__(self, request: ApprovalRequest, timeout: float) -> bool | None: ...


class ApprovalQueue:
    """Pending requests that any face (CLI, HTTP, dashboard) can resolve later."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, ApprovalRequest] = {}

    def submit(
        self, *, session: str, agent: str, role: str, tool: str, args: dict[str, Any],
        preview: dict[str, Any], reason: str, timeout: float,
    ) -> ApprovalRequest:
        now = self._clock()
        req = ApprovalRequest(
            id="apr_" + secrets.token_hex(8), session=session, agent=agent, role=role,
            tool=tool, digest=args_digest(tool, args), preview=preview, reason=reason,
            created=now, expires=now + timeout,
        )
        with self._lock:
            self._items[req.id] = req
        return req

    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._lock:
            req = self._items.get(request_id)
        if req is not None and req.status == "pending" and self._clock() > req.expires:
            req.status = "expired"
            req._event.set()
        return req

    def pending(self) -> list[ApprovalRequest]:
        with self._lock:
            items = list(self._items.values())
        return [r for r in items if self.get(r.id) is not None and r.status == "pending"]

    def resolve(self, request_id: str, approve: bool, *, approver: str = "", note: str = "") -> None:
        req = self.get(request_id)
        if req is None:
            raise KeyError(f"no approval request {request_id!r}")
        if req.status != "pending":
            raise ValueError(f"approval request {request_id} is already {req.status}")
        req.status = "approved" if approve else "denied"
        req.approver, req.note = approver, note
        req._event.set()

    def wait(self, request_id: str, timeout: float) -> bool | None:
        req = self.get(request_id)
        if req is None:
            return None
        req._event.wait(max(0.0, min(timeout, req.expires - self._clock())))
        req = self.get(request_id)
        if req is None or req.status in ("pending", "expired"):
            return None
        return req.status == "approved"

    def granted(self, request_id: str, tool: str, args: dict[str, Any]) -> bool:
        """True only if the request was approved for exactly this tool and arguments."""
        req = self.get(request_id)
        return (
            req is not None and req.status == "approved" and req.tool == tool
            and req.digest == args_digest(tool, args)
        )


class CallbackApprover:
    """Wraps a Python function ``fn(request) -> bool``. Exceptions count as deny."""

    def __init__(self, fn: Callable[[ApprovalRequest], bool]) -> None:
        self.fn = fn

    def __call__(self, request: ApprovalRequest, timeout: float) -> bool | None:
        try:
            return bool(self.fn(request))
        except Exception:
            return False


class DenyAllApprover:
    """No human present: every request is refused (the safe default)."""

    def __call__(self, request: ApprovalRequest, timeout: float) -> bool | None:
        return False


class QueueApprover:
    """Leaves the request in the queue and waits for another face to resolve it."""

    def __init__(self, queue: ApprovalQueue) -> None:
        self.queue = queue

    def __call__(self, request: ApprovalRequest, timeout: float) -> bool | None:
        return self.queue.wait(request.id, timeout)


class TerminalApprover:
    """Asks on a terminal. Reads one line; only 'y' or 'yes' approves; timeout = deny."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def __call__(self, request: ApprovalRequest, timeout: float) -> bool | None:
        self.stdout.write(
            f"\nApproval needed: {request.agent} ({request.role}) wants to call "
            f"{request.tool}({json.dumps(request.preview, default=repr)})\n"
            f"reason: {request.reason}\nApprove? [y/N] (auto-deny in {timeout:.0f}s): "
        )
        self.stdout.flush()
        answer: list[str] = []

        def read() -> None:
            try:
                answer.append(self.stdin.readline())
            except Exception:  # noqa: S110 - a closed stdin means no answer
                pass

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        if not answer:
            self.stdout.write("\nno answer: denied\n")
            return None
        return answer[0].strip().lower() in {"y", "yes"}
