"""Per-session memory of what the session has seen: a fingerprint index, the labels of
each source, whether untrusted content and private data were read, and the target-like
values (addresses, URLs, hosts) found in untrusted and trusted text.

Two implementations of one interface: :class:`MemoryFlowStore` (embedded, kept in
``SessionState.extras["flow"]``) and :class:`RedisFlowStore` (shared by gateway workers:
every worker that opens the same session id sees the same taint).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import re2

from ..stores import StoreError
from .fingerprints import QueryPrints, SeenPrints, stable_hash, tokens

# RE2 (linear time): these run over whole tool results, and Python's backtracking engine
# is quadratic on long runs of word characters — a result of 65 KB of "x" took 4 s and
# 100 KB of dotted words 11 s, so any tool could stall the gate.
_EMAIL = re2.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_URL = re2.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s<>\"'`]+")
_STRIP = "\"'`.,;:!?()[]{}<>*"
# Marks that an untrusted result was longer than the span scan: a multi-word target not
# found in trusted text then counts as untrusted (the name may sit past the scan).
OVERFLOW_KEY = "#overflow"


@dataclass(frozen=True, slots=True)
class Source:
    """One remembered result: which tool, its label, how many n-grams it left."""

    id: int
    tool: str
    rank: int
    trusted: bool
    grams: int


@dataclass(frozen=True, slots=True)
class Match:
    source: Source
    hits: int  # shared n-gram fingerprints
    exact: bool  # an exact span or a whole short value matched


def _span_key(th: tuple[int, ...]) -> str:
    # ``hash`` of a tuple of ints is not salted: the same in every process (shared stores)
    return f"#{hash(th)}"


def span_candidates(text: str, max_words: int, budget: int) -> set[str]:
    """Keys of every run of 2..``max_words`` normalised words in the first ``budget``
    words of ``text`` (so a hotel or company name with spaces can be found), plus
    :data:`OVERFLOW_KEY` when the text is longer than the budget."""
    if max_words < 2 or budget <= 0:
        return set()
    toks = tokens(text)
    out: set[str] = set()
    if len(toks) > budget:
        out.add(OVERFLOW_KEY)
        toks = toks[:budget]
    th = [stable_hash(t) for t in toks]
    m = len(th)
    for n in range(2, max_words + 1):
        if m < n:
            break
        out.update(f"#{h}" for h in map(hash, zip(*(th[j:m - n + 1 + j] for j in range(n)),
                                                   strict=True)))
    return out


def target_spans(value: str, max_words: int) -> tuple[list[str], bool]:
    """How a multi-word target is looked up: the key of its whole word sequence, or, when
    longer than ``max_words``, the keys of every ``max_words`` window (all must be found).
    The flag says whether the value has more than one word."""
    th = [stable_hash(t) for t in tokens(value)]
    if len(th) < 2 or max_words < 2:
        return [], False
    if len(th) <= max_words:
        return [_span_key(tuple(th))], True
    return [_span_key(tuple(th[i:i + max_words]))
            for i in range(len(th) - max_words + 1)], True


def target_candidates(text: str) -> set[str]:
    """Values in ``text`` that could name a destination: every whitespace token (stripped
    of punctuation, case-folded), e-mail addresses, URLs and their hosts."""
    out = {t.strip(_STRIP).casefold() for t in set(text.split())}
    for m in _EMAIL.finditer(text):
        addr = m.group(0).casefold()
        out.add(addr)
        out.add(addr.rsplit("@", 1)[1])  # a host an attacker named by its mail domain
    for m in _URL.finditer(text):
        u = m.group(0).rstrip(_STRIP)
        out.add(u.casefold())
        try:
            host = urlsplit(u).hostname
        except ValueError:
            host = None
        if host:
            out.add(host.casefold())
    out.discard("")
    return {t for t in out if len(t) >= 3}


_LINK = re2.compile(r"\b(?:[a-zA-Z][a-zA-Z0-9+.\-]*://|www\.)[^\s<>\"'`]+")


def links_in(text: str) -> list[str]:
    """URLs (with a scheme) and ``www.`` hosts in free text, trailing punctuation cut."""
    out = []
    for m in _LINK.finditer(text):
        u = m.group(0).rstrip(_STRIP)
        if len(u) > 4:
            out.append(u)
    return list(dict.fromkeys(out))


def target_keys(value: str) -> list[str]:
    """How a sink target is looked up: the value itself, and a URL's host."""
    v = value.strip().strip(_STRIP).casefold()
    keys = [v] if v else []
    if "://" in v:
        try:
            host = urlsplit(v).hostname
        except ValueError:
            host = None
        if host:
            keys.append(host)
    if v.startswith("mailto:"):
        keys.append(v[7:])
    return keys


class FlowStore(Protocol):
    def record(self, tool: str, rank: int, trusted: bool, prints: SeenPrints,
               targets: set[str]) -> None:
        """Remember one result the model was shown."""
        ...

    def mark(self, *, untrusted: bool, targets: set[str], user: bool = False) -> None:
        """Remember text that is not a tool result (model input): its targets only.
        ``user``: trusted input (the user's request), also kept apart."""
        ...

    def short_lengths(self) -> set[int]: ...

    def match(self, q: QueryPrints) -> list[Match]: ...

    def flags(self) -> tuple[bool, int]:
        """(untrusted content seen, highest sensitivity rank seen; -1 for none)."""
        ...

    def target_origin(self, keys: list[str]) -> tuple[bool, bool]:
        """(any key seen in untrusted text, any key seen in trusted text)."""
        ...

    def target_hits(self, keys: list[str]) -> tuple[list[bool], list[bool], list[bool]]:
        """Per key: (seen in untrusted text, in trusted text, in trusted input)."""
        ...

    def full(self) -> bool:
        """True once the session's index reached ``max_entries`` (nothing more was kept)."""
        ...

    def empty(self) -> bool: ...


def _tally(hits: dict[int, list[int]], exact: set[int],
           sources: dict[int, Source]) -> list[Match]:
    out = []
    for sid in set(hits) | exact:
        src = sources.get(sid)
        if src is not None:
            out.append(Match(src, len(hits.get(sid, ())), sid in exact))
    return out


class MemoryFlowStore:
    """Embedded store: plain dicts and sets, guarded by a lock. At most ``max_entries``
    index entries (fingerprints and target keys); a result that would pass the cap is not
    indexed and the store reports :meth:`full` (the sink layer then refuses every sink:
    evicting old taint instead would let the oldest data leak)."""

    def __init__(self, max_entries: int = 4_000_000) -> None:
        self.max_entries = max_entries
        self._full = False
        self._lock = threading.Lock()
        self._grams: dict[int, int | tuple[int, ...] | set[int]] = {}
        self._exact: dict[int, int | tuple[int, ...] | set[int]] = {}
        self._shorts: set[int] = set()
        self._sources: dict[int, Source] = {}
        self._untrusted = False
        self._max_rank = -1
        self._targets_untrusted: set[str] = set()
        self._targets_trusted: set[str] = set()
        self._targets_user: set[str] = set()

    @staticmethod
    def _put(index: dict[int, int | tuple[int, ...] | set[int]], fps: Iterable[int], sid: int) -> None:
        # One source id is an int, a few a tuple, many a set (a fingerprint shared by many
        # results, e.g. a JSON key: keeps each insert O(1) however long the session runs).
        for fp in fps:
            cur = index.get(fp)
            if cur is None:
                index[fp] = sid
            elif isinstance(cur, int):
                if cur != sid:
                    index[fp] = (cur, sid)
            elif isinstance(cur, set):
                cur.add(sid)
            elif sid not in cur:
                index[fp] = (*cur, sid) if len(cur) < 8 else {*cur, sid}

    def _size(self) -> int:
        return (len(self._grams) + len(self._exact) + len(self._targets_untrusted)
                + len(self._targets_trusted) + len(self._targets_user))

    def record(self, tool: str, rank: int, trusted: bool, prints: SeenPrints,
               targets: set[str]) -> None:
        with self._lock:
            self._max_rank = max(self._max_rank, rank)
            if not trusted:
                self._untrusted = True
            adds = (len(prints.grams) + len(prints.spans)
                    + sum(map(len, prints.shorts.values())) + len(targets))
            if self._full or self._size() + adds > self.max_entries:
                self._full = True
                return
            sid = len(self._sources)
            self._sources[sid] = Source(sid, tool, rank, trusted, len(prints.grams))
            self._put(self._grams, prints.grams, sid)
            self._put(self._exact, prints.spans, sid)
            for n, hs in prints.shorts.items():
                self._shorts.add(n)
                self._put(self._exact, hs, sid)
            self._max_rank = max(self._max_rank, rank)
            if not trusted:
                self._untrusted = True
                self._targets_untrusted |= targets
            else:
                self._targets_trusted |= targets

    def mark(self, *, untrusted: bool, targets: set[str], user: bool = False) -> None:
        with self._lock:
            if untrusted:
                self._untrusted = True
            if self._full or self._size() + len(targets) * (2 if user else 1) > self.max_entries:
                self._full = True
                return
            if untrusted:
                self._targets_untrusted |= targets
            else:
                self._targets_trusted |= targets
                if user:
                    self._targets_user |= targets

    def short_lengths(self) -> set[int]:
        return set(self._shorts)

    def match(self, q: QueryPrints) -> list[Match]:
        hits: dict[int, list[int]] = {}
        exact: set[int] = set()
        grams = self._grams
        for fp in q.grams:
            v = grams.get(fp)
            if v is None:
                continue
            for sid in (v,) if isinstance(v, int) else v:
                hits.setdefault(sid, []).append(fp)
        ex = self._exact
        for fp in q.spans | q.shorts:
            v = ex.get(fp)
            if v is not None:
                exact.update((v,) if isinstance(v, int) else v)
        return _tally(hits, exact, self._sources)

    def flags(self) -> tuple[bool, int]:
        return self._untrusted, self._max_rank

    def target_origin(self, keys: list[str]) -> tuple[bool, bool]:
        u, t, _ = self.target_hits(keys)
        return any(u), any(t)

    def target_hits(self, keys: list[str]) -> tuple[list[bool], list[bool], list[bool]]:
        tu, tt, tn = self._targets_untrusted, self._targets_trusted, self._targets_user
        return [k in tu for k in keys], [k in tt for k in keys], [k in tn for k in keys]

    def full(self) -> bool:
        return self._full

    def empty(self) -> bool:
        return (not self._sources and not self._untrusted and not self._targets_trusted
                and not self._full)


_APPEND = """
local v = ARGV[1]
for i = 2, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur then
    redis.call('HSET', KEYS[1], ARGV[i], v)
  elseif not string.find(',' .. cur, ',' .. v, 1, true) then
    redis.call('HSET', KEYS[1], ARGV[i], cur .. v)
  end
end
return 1
"""


class RedisFlowStore:
    """Shared store: one Redis hash per index, keyed by session id, with a TTL.

    Keys (under ``prefix + session``): ``:g`` n-gram → source ids, ``:x`` exact spans and
    short values → source ids, ``:s`` source records, ``:m`` flags and short lengths,
    ``:tu`` / ``:tt`` untrusted / trusted target sets. A sink check is one pipeline of
    ``HMGET``s and ``SMISMEMBER``s; any Redis failure raises :class:`StoreError` and the
    gate denies.
    """

    def __init__(self, session_id: str, *, url: str = "redis://127.0.0.1:6379/0",
                 prefix: str = "shieldwall:flow:", ttl: float = 86400.0,
                 client: Any = None, max_entries: int = 4_000_000) -> None:
        self.max_entries = max_entries
        if client is None:
            import redis

            client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._r = client
        base = prefix + session_id
        self._k = {n: f"{base}:{n}" for n in ("g", "x", "s", "m", "tu", "tt", "tn")}
        self._ttl = max(1, int(ttl))
        self._append_script = self._r.register_script(_APPEND)

    def _run(self, fn: Any) -> Any:
        try:
            return fn()
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"redis flow store unavailable: {type(e).__name__}: {e}") from None

    def _reserve(self, adds: int, rank: int | None, untrusted: bool) -> bool:
        """Count ``adds`` entries against the cap (one round trip); False when full.
        Flags (untrusted seen, rank seen) are set either way."""
        p = self._r.pipeline(transaction=False)
        p.hincrby(self._k["m"], "entries", adds)
        if rank is not None:
            p.hset(self._k["m"], f"rank:{rank}", 1)
        if untrusted:
            p.hset(self._k["m"], "untrusted", 1)
        p.hexists(self._k["m"], "full")
        p.expire(self._k["m"], self._ttl)
        res = p.execute()
        if res[0] > self.max_entries or res[-2]:
            self._r.hset(self._k["m"], "full", 1)
            return False
        return True

    def record(self, tool: str, rank: int, trusted: bool, prints: SeenPrints,
               targets: set[str]) -> None:
        def go() -> None:
            adds = (len(prints.grams) + len(prints.spans)
                    + sum(map(len, prints.shorts.values())) + len(targets))
            if not self._reserve(adds, rank, not trusted):
                return
            sid = int(self._r.hincrby(self._k["m"], "next", 1)) - 1
            src = json.dumps([tool, rank, trusted, len(prints.grams)])
            p = self._r.pipeline(transaction=False)
            p.hset(self._k["s"], str(sid), src)
            self._append(p, self._k["g"], prints.grams, sid)
            exact = set(prints.spans)
            for n, hs in prints.shorts.items():
                exact |= hs
                p.hset(self._k["m"], f"short:{n}", 1)
            self._append(p, self._k["x"], exact, sid)
            # max rank via a Lua-free read-modify-write is racy; HSET per rank is not
            p.hset(self._k["m"], f"rank:{rank}", 1)
            if not trusted:
                p.hset(self._k["m"], "untrusted", 1)
            tkey = self._k["tt"] if trusted else self._k["tu"]
            if targets:
                p.sadd(tkey, *targets)
            for k in self._k.values():
                p.expire(k, self._ttl)
            p.execute()

        self._run(go)

    def _append(self, p: Any, key: str, fps: Iterable[int], sid: int) -> None:
        # Each fingerprint maps to a comma list of source ids; the script appends so two
        # sources sharing a fingerprint are both kept (one round trip for the batch).
        items = [str(fp) for fp in fps]
        for i in range(0, len(items), 5000):
            self._append_script(keys=[key], args=[f"{sid},", *items[i:i + 5000]], client=p)

    def mark(self, *, untrusted: bool, targets: set[str], user: bool = False) -> None:
        def go() -> None:
            if not self._reserve(len(targets) * (2 if user else 1), None, untrusted):
                return
            p = self._r.pipeline(transaction=False)
            if untrusted:
                p.hset(self._k["m"], "untrusted", 1)
            if targets:
                p.sadd(self._k["tu"] if untrusted else self._k["tt"], *targets)
                if user and not untrusted:
                    p.sadd(self._k["tn"], *targets)
            for k in self._k.values():
                p.expire(k, self._ttl)
            p.execute()

        self._run(go)

    def _meta(self) -> dict[str, str]:
        raw = self._run(lambda: self._r.hgetall(self._k["m"]))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def short_lengths(self) -> set[int]:
        return {int(k[6:]) for k in self._meta() if k.startswith("short:")}

    def match(self, q: QueryPrints) -> list[Match]:
        grams = [str(fp) for fp in q.grams]
        exact = [str(fp) for fp in q.spans | q.shorts]

        def go() -> tuple[list[Any], list[Any], dict[bytes, bytes]]:
            p = self._r.pipeline(transaction=False)
            p.hmget(self._k["g"], grams) if grams else p.echo("")
            p.hmget(self._k["x"], exact) if exact else p.echo("")
            p.hgetall(self._k["s"])
            g, x, s = p.execute()
            return (g if grams else []), (x if exact else []), s

        g, x, s = self._run(go)
        hits: dict[int, list[int]] = {}
        for fp, v in zip(grams, g, strict=True):
            if v:
                for sid in v.decode().rstrip(",").split(","):
                    hits.setdefault(int(sid), []).append(int(fp))
        ex: set[int] = set()
        for v in x:
            if v:
                ex.update(int(sid) for sid in v.decode().rstrip(",").split(","))
        sources: dict[int, Source] = {}
        for sid_b, raw in s.items():
            tool, rank, trusted, n = json.loads(raw)
            sid = int(sid_b)
            sources[sid] = Source(sid, tool, int(rank), bool(trusted), int(n))
        return _tally(hits, ex, sources)

    def flags(self) -> tuple[bool, int]:
        m = self._meta()
        ranks = [int(k[5:]) for k in m if k.startswith("rank:")]
        return "untrusted" in m, max(ranks, default=-1)

    def target_origin(self, keys: list[str]) -> tuple[bool, bool]:
        u, t, _ = self.target_hits(keys)
        return any(u), any(t)

    def target_hits(self, keys: list[str]) -> tuple[list[bool], list[bool], list[bool]]:
        if not keys:
            return [], [], []

        def go() -> tuple[list[Any], list[Any], list[Any]]:
            p = self._r.pipeline(transaction=False)
            p.smismember(self._k["tu"], keys)
            p.smismember(self._k["tt"], keys)
            p.smismember(self._k["tn"], keys)
            u, t, n = p.execute()
            return u, t, n

        u, t, n = self._run(go)
        return [bool(x) for x in u], [bool(x) for x in t], [bool(x) for x in n]

    def full(self) -> bool:
        return "full" in self._meta()

    def empty(self) -> bool:
        return not self._run(lambda: self._r.exists(self._k["m"], self._k["tt"]))

    def clear(self) -> None:
        self._run(lambda: self._r.delete(*self._k.values()))
