"""Small state stores behind one interface, embedded (in-process) or shared (Redis).

The gate keeps no state a second worker could not see when the shared store is used:
call counters, rate buckets and revocations live here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .policy.model import StoreSettings


class StoreError(Exception):
    """A store could not be reached or answered nonsense. The gate denies."""


class CounterStore(Protocol):
    def take(self, key: str, limit: int) -> tuple[bool, int]:
        """Consume one unit of a hard cap. Returns (ok, remaining after this call)."""
        ...

    def bucket(self, key: str, rate_per_s: float, burst: int, now: float) -> tuple[bool, float]:
        """Token bucket: take one token. Returns (ok, tokens left)."""
        ...

    def revoke(self, key: str) -> None: ...

    def is_revoked(self, key: str) -> bool: ...

    def any_revoked(self, *keys: str) -> bool:
        """Whether any of ``keys`` is revoked (one round trip on a shared store)."""
        ...

    def unrevoke(self, key: str) -> bool:
        """Lift a revocation; returns whether there was one."""
        ...


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        self._revoked: set[str] = set()

    def take(self, key: str, limit: int) -> tuple[bool, int]:
        with self._lock:
            used = self._counts.get(key, 0)
            if used >= limit:
                return False, 0
            self._counts[key] = used + 1
            return True, limit - used - 1

    def bucket(self, key: str, rate_per_s: float, burst: int, now: float) -> tuple[bool, float]:
        with self._lock:
            tokens, last = self._buckets.get(key, (float(burst), now))
            tokens = min(float(burst), tokens + max(0.0, now - last) * rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False, tokens
            self._buckets[key] = (tokens - 1.0, now)
            return True, tokens - 1.0

    def revoke(self, key: str) -> None:
        with self._lock:
            self._revoked.add(key)

    def is_revoked(self, key: str) -> bool:
        return key in self._revoked

    def any_revoked(self, *keys: str) -> bool:
        return any(k in self._revoked for k in keys)

    def unrevoke(self, key: str) -> bool:
        with self._lock:
            if key not in self._revoked:
                return False
            self._revoked.discard(key)
            return True

    def ping(self) -> None:
        """Always reachable (for start-up checks that work with either store)."""


_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if used >= limit then return {0, 0} end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, limit - used - 1}
"""

_BUCKET = """
local rate = tonumber(ARGV[1]); local burst = tonumber(ARGV[2]); local now = tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(v[1]) or burst
local last = tonumber(v[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {ok, tostring(tokens)}
"""


class RedisStore:
    """Shared store on Redis: atomic Lua scripts, so many gateway workers share budgets."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "shieldwall:",
                 ttl_s: int = 86400) -> None:
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.prefix = prefix
        self.ttl = ttl_s
        self._take: Callable[..., Any] = self._r.register_script(_TAKE)
        self._bucket: Callable[..., Any] = self._r.register_script(_BUCKET)

    def _call(self, fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except Exception as e:  # any redis failure: the gate fails closed
            raise StoreError(f"redis store unavailable: {type(e).__name__}: {e}") from None

    def take(self, key: str, limit: int) -> tuple[bool, int]:
        ok, rem = self._call(self._take, keys=[self.prefix + "c:" + key], args=[limit, self.ttl])
        return bool(ok), int(rem)

    def bucket(self, key: str, rate_per_s: float, burst: int, now: float) -> tuple[bool, float]:
        ok, tokens = self._call(
            self._bucket, keys=[self.prefix + "b:" + key], args=[rate_per_s, burst, now, self.ttl]
        )
        return bool(ok), float(tokens)

    def revoke(self, key: str) -> None:
        self._call(self._r.set, self.prefix + "r:" + key, "1", ex=self.ttl)

    def is_revoked(self, key: str) -> bool:
        return bool(self._call(self._r.exists, self.prefix + "r:" + key))

    def any_revoked(self, *keys: str) -> bool:
        return bool(self._call(self._r.exists, *(self.prefix + "r:" + k for k in keys)))

    def unrevoke(self, key: str) -> bool:
        return bool(self._call(self._r.delete, self.prefix + "r:" + key))

    def ping(self) -> None:
        """Raise :class:`StoreError` now if Redis cannot be reached (start-up checks)."""
        self._call(self._r.ping)


def open_counter_store(settings: StoreSettings) -> CounterStore:
    """The store a policy's ``store`` section names (a :class:`StoreSettings`)."""
    if settings.backend == "redis":
        return RedisStore(settings.url, prefix=settings.prefix, ttl_s=max(1, int(settings.ttl)))
    return MemoryStore()


def monotonic_clock() -> float:
    return time.monotonic()
