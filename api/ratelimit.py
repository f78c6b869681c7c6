"""Rate limits: run starts per key, deliveries per webhook, failed authentications per client.

The `limits` package keeps the moving windows: in this process by default, in Redis when
`FLOWFORGE_REDIS_URL` is set, so that several API processes share one count per key. A limit
passed is `RateLimitedError` (429) with the seconds until the window frees a slot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from flowforge.core.errors import FlowForgeError


class RateLimitedError(FlowForgeError):
    """Too many requests of one kind from one key, webhook or client (429)."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limit:
    what: str
    item: RateLimitItem

    @classmethod
    def of(cls, what: str, notation: str) -> Limit:
        return cls(what, parse(notation))


class RateLimits:
    def __init__(self, runs: str, hooks: str, auth_failures: str,
                 redis_url: str | None = None) -> None:
        storage: Storage = MemoryStorage()
        if redis_url:
            # redis-py, the client prefect-redis uses too, rather than limits' default coredis
            shared = storage_from_string(f"async+{redis_url}", implementation="redispy")
            assert isinstance(shared, Storage)  # an async+ scheme gives an async storage
            storage = shared
        self._limiter = MovingWindowRateLimiter(storage)
        self.runs = Limit.of("run starts", runs)
        self.hooks = Limit.of("deliveries", hooks)
        self.auth_failures = Limit.of("failed authentications", auth_failures)

    async def hit(self, limit: Limit, who: str) -> None:
        """Count one more for `who`; `RateLimitedError` once its window is full."""
        if await self._limiter.hit(limit.item, limit.what, who):
            return
        stats = await self._limiter.get_window_stats(limit.item, limit.what, who)
        retry = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimitedError(f"too many {limit.what}: at most {limit.item} (retry in {retry} s)",
                               retry)

    async def hit_quietly(self, limit: Limit, who: str) -> None:
        """Count one more for `who` without refusing anything (a failure to remember)."""
        await self._limiter.hit(limit.item, limit.what, who)

    async def blocked(self, limit: Limit, who: str) -> int | None:
        """Seconds until `who` may try again when its window is full, else None (no hit)."""
        if await self._limiter.test(limit.item, limit.what, who):
            return None
        stats = await self._limiter.get_window_stats(limit.item, limit.what, who)
        return max(1, math.ceil(stats.reset_time - time.time()))


__all__ = ["Limit", "RateLimitedError", "RateLimits"]
