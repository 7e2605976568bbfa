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
from dataclasses import dataclass
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
    status: str = "pending"  # pending | approved | denied | expired | used
    approver: str = ""
    note: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id, "session": self.session, "agent": self.agent, "role": self.role,
            "tool": self.tool, "args": self.preview, "digest": self.digest,
            "reason": self.reason, "status": self.status, "expires": self.expires,
        }

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ApprovalRequest:
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})


class Approver(Protocol):
    """Answers one request: True (approve), False (deny) or None (no answer)."""

    def __call__(self, request: ApprovalRequest, timeout: float) -> bool | None: ...


class QueueBackend(Protocol):
    """Where requests live. ``transition`` must be atomic (compare-and-set on status)."""

    def put(self, req: dict[str, Any], ttl: float) -> None: ...

    def load(self, request_id: str) -> dict[str, Any] | None: ...

    def transition(self, request_id: str, expected: str, updates: dict[str, Any]) -> bool: ...

    def ids(self) -> list[str]: ...


class MemoryBackend:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}

    def put(self, req: dict[str, Any], ttl: float) -> None:
        with self._lock:
            self._items[req["id"]] = dict(req)

    def load(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(request_id)
            return dict(item) if item is not None else None

    def transition(self, request_id: str, expected: str, updates: dict[str, Any]) -> bool:
        with self._lock:
            item = self._items.get(request_id)
            if item is None or item["status"] != expected:
                return False
            item.update(updates)
            return True

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._items)


class ApprovalQueue:
    """Pending requests that any face (CLI, HTTP, another process) can resolve later.

    An approval is single-use: :meth:`consume` turns ``approved`` into ``used`` atomically,
    so one person's yes runs the action once, with exactly the arguments shown.
    """

    def __init__(self, clock: Callable[[], float] = time.time, backend: QueueBackend | None = None,
                 poll_s: float = 0.02) -> None:
        self._clock = clock
        self.backend: QueueBackend = backend or MemoryBackend()
        self._poll = poll_s

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
        self.backend.put(req.to_dict(), timeout + 3600)
        return req

    def get(self, request_id: str) -> ApprovalRequest | None:
        d = self.backend.load(request_id)
        if d is None:
            return None
        req = ApprovalRequest.from_dict(d)
        if req.status == "pending" and self._clock() > req.expires:
            self.backend.transition(request_id, "pending", {"status": "expired"})
            req.status = "expired"
        return req

    def pending(self) -> list[ApprovalRequest]:
        out = []
        for rid in self.backend.ids():
            req = self.get(rid)
            if req is not None and req.status == "pending":
                out.append(req)
        return sorted(out, key=lambda r: r.created)

    def resolve(self, request_id: str, approve: bool, *, approver: str = "", note: str = "") -> None:
        req = self.get(request_id)
        if req is None:
            raise KeyError(f"no approval request {request_id!r}")
        updates = {"status": "approved" if approve else "denied", "approver": approver, "note": note}
        if not self.backend.transition(request_id, "pending", updates):
            current = self.get(request_id)
            raise ValueError(f"approval request {request_id} is already "
                             f"{current.status if current else 'gone'}")

    def wait(self, request_id: str, timeout: float) -> bool | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            req = self.get(request_id)
            if req is None or req.status == "expired":
                return None
            if req.status != "pending":
                return req.status in ("approved", "used")
            if time.monotonic() >= deadline:
                return None
            time.sleep(self._poll)

    def granted(self, request_id: str, tool: str, args: dict[str, Any]) -> bool:
        """True if the request is approved (and unused) for exactly this tool and arguments."""
        req = self.get(request_id)
        return (
            req is not None and req.status == "approved" and req.tool == tool
            and req.digest == args_digest(tool, args)
        )

    def consume(self, request_id: str, tool: str, args: dict[str, Any]) -> bool:
        """Atomically spend an approval for exactly this tool and arguments."""
        return self.granted(request_id, tool, args) and self.backend.transition(
            request_id, "approved", {"status": "used"})


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
