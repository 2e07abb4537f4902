"""Rate limits with `limits`: Redis in the full stack (one count for every gateway worker and
replica), memory in the embedded mode. Policies are `limits` strings from the settings."""

import ipaddress
import math
import time
from dataclasses import dataclass
from math import inf
from typing import Any, cast

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from gateway.metrics import RATE_LIMIT_REFUSALS, RATE_LIMIT_STORAGE_ERRORS
from gateway.settings import GatewaySettings
from shared.errors import RateLimitExceeded, ServiceUnavailable
from shared.logging import get_logger
from shared.routes import RoutePatterns
from shared.security import Identity

log = get_logger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Policy:
    name: str
    item: RateLimitItem

    @property
    def window_seconds(self) -> int:
        return self.item.get_expiry()


@dataclass(frozen=True)
class Decision:
    policy: Policy
    allowed: bool
    remaining: int
    reset_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        limit = self.policy.item.amount
        name = self.policy.name
        pairs = [
            ("x-ratelimit-limit", str(limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(int(time.time()) + self.reset_after)),
            ("ratelimit-policy", f'"{name}";q={limit};w={self.policy.window_seconds}'),
            ("ratelimit", f'"{name}";r={self.remaining};t={self.reset_after}'),
        ]
        if not self.allowed:
            pairs.append(("retry-after", str(max(1, self.reset_after))))
        return [(key.encode(), value.encode()) for key, value in pairs]


@dataclass(frozen=True)
class SlidingWindow:
    """One client's window of one policy in Redis, under `limits`' own keys (previous and
    current window) and counted by `limits`' own scripts: `queue` adds the hit and the read
    of the window to a pipeline, `decide` reads their answers as the library would."""

    policy: Policy
    keys: list[str]
    acquire: AsyncScript
    read: AsyncScript

    def queue(self, pipe: Pipeline) -> None:
        item = self.policy.item
        pipe.evalsha(self.acquire.sha, 2, *self.keys, item.amount, item.get_expiry(), 1)
        pipe.evalsha(self.read.sha, 2, *self.keys, item.get_expiry())

    async def decide(self, acquired: Any, window: Any) -> Decision:
        """The decision from the two scripts' answers. A script Redis no longer holds (it
        restarted) did not run: the library's own call loads it and counts again."""
        item = self.policy.item
        if isinstance(acquired, NoScriptError):
            acquired = await self.acquire(keys=self.keys, args=[item.amount, item.get_expiry(), 1])
            window = await self.read(keys=self.keys, args=[item.get_expiry()])
        elif isinstance(window, NoScriptError):
            window = await self.read(keys=self.keys, args=[item.get_expiry()])
        for answer in (acquired, window):
            if isinstance(answer, Exception):
                raise answer
        remaining, reset_time = window_stats(item, window)
        return RateLimits.decision(self.policy, bool(acquired), remaining, reset_time)


def window_stats(item: RateLimitItem, window: Any) -> tuple[int, float]:
    """Remaining hits and reset time from what `limits`' sliding-window script answers, as
    its SlidingWindowCounterRateLimiter.get_window_stats computes them."""
    previous, previous_ttl_ms, current, current_ttl_ms = window or (0, 0, 0, 0)
    previous_count, current_count = int(previous or 0), int(current or 0)
    previous_expires_in = max(0, float(previous_ttl_ms or 0)) / 1000
    current_expires_in = max(0, float(current_ttl_ms or 0)) / 1000
    expiry = item.get_expiry()
    weighted = previous_count * previous_expires_in / expiry + current_count
    remaining = max(0, item.amount - math.floor(weighted))
    now = time.time()
    if not (previous_count or current_count):
        return remaining, now
    previous_reset_in = previous_expires_in % (expiry / previous_count) if previous_count else inf
    current_reset_in = current_expires_in % expiry if current_count else inf
    return remaining, now + min(previous_reset_in, current_reset_in)


class StorageUnavailable(Exception):
    """The count could not be taken and RATE_LIMIT_FAIL_OPEN is false."""


def make_storage(settings: GatewaySettings) -> Storage:
    if settings.redis_url:
        return RedisStorage(
            f"async+{settings.redis_url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=f"{settings.queue_prefix}:ratelimit",
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
    return MemoryStorage()


class RateLimits:
    def __init__(self, settings: GatewaySettings, storage: Storage) -> None:
        self.storage = storage
        strategy: type[RateLimiter] = (
            MovingWindowRateLimiter
            if settings.rate_limit_strategy == "moving-window"
            else SlidingWindowCounterRateLimiter
        )
        self._limiter = strategy(storage)
        self._fail_open = settings.rate_limit_fail_open
        self.auth = Policy("auth", parse(settings.rate_limit_auth))
        self.default = Policy("default", parse(settings.rate_limit_default))
        self.admin = Policy("admin", parse(settings.rate_limit_admin))
        self._auth_routes = RoutePatterns(settings.rate_limit_auth_routes)
        self._admin_routes = RoutePatterns(settings.rate_limit_admin_routes)
        # The storage's Redis client (None in memory).
        self.redis: Redis | None = None
        if isinstance(storage, RedisStorage) and isinstance(storage.bridge, RedispyBridge):
            client = storage.bridge.get_connection()
            assert isinstance(client, Redis)
            self.redis = client

    def policy_for(
        self, method: str, path: str, identity: Identity | None, client_ip: str
    ) -> tuple[Policy, str]:
        """The policy that applies and whose count it takes (client IP, or the user)."""
        if self._auth_routes.match(method, path):
            return self.auth, f"ip:{client_ip}"
        if identity is None:
            return self.default, f"ip:{client_ip}"
        if identity.is_admin and self._admin_routes.match(method, path):
            return self.admin, f"user:{identity.user_id}"
        return self.default, f"user:{identity.user_id}"

    async def check(self, policy: Policy, key: str) -> Decision | None:
        """One hit against the policy; None when the storage is down and failing open."""
        try:
            allowed = await self._limiter.hit(policy.item, policy.name, key)
            stats = await self._limiter.get_window_stats(policy.item, policy.name, key)
        except Exception as exc:
            self.storage_failed(exc)
            return None
        return self.decision(policy, allowed, stats.remaining, stats.reset_time)

    def storage_failed(self, exc: Exception) -> None:
        """A count that could not be taken: None when failing open, else StorageUnavailable."""
        RATE_LIMIT_STORAGE_ERRORS.inc()
        log.warning("rate_limit_storage_unavailable", error=repr(exc), fail_open=self._fail_open)
        if self._fail_open:
            return None
        raise StorageUnavailable() from exc

    @staticmethod
    def decision(policy: Policy, allowed: bool, remaining: int, reset_time: float) -> Decision:
        if not allowed:
            RATE_LIMIT_REFUSALS.labels(policy.name).inc()
        reset_after = max(0, math.ceil(reset_time - time.time()))
        return Decision(policy, allowed, max(0, remaining), reset_after)

    async def enforce(
        self,
        method: str,
        path: str,
        identity: Identity | None,
        client_ip: str,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Counts a request: its rate-limit headers go into `headers` (for the answer,
        whatever it is); 429 when over the limit, 503 when the count cannot be taken and
        RATE_LIMIT_FAIL_OPEN is false."""
        policy, key = self.policy_for(method, path, identity, client_ip)
        try:
            decision = await self.check(policy, key)
        except StorageUnavailable as exc:
            raise ServiceUnavailable("Rate limiting is unavailable") from exc
        self.apply(decision, headers)

    @staticmethod
    def apply(decision: Decision | None, headers: list[tuple[bytes, bytes]]) -> None:
        """The decision's headers into `headers`; 429 when it refuses."""
        if decision is None:
            return
        headers[:] = decision.headers()
        if not decision.allowed:
            raise RateLimitExceeded(
                details={"policy": decision.policy.name, "retry_after": decision.reset_after}
            )

    def sliding_window(self, policy: Policy, key: str) -> "SlidingWindow | None":
        """The policy's window for `key` as `limits` keeps it in Redis, to be counted in a
        pipeline with other commands; None unless the storage is Redis and the strategy the
        sliding window counter."""
        storage = self.storage
        if self.redis is None or not isinstance(self._limiter, SlidingWindowCounterRateLimiter):
            return None
        assert isinstance(storage, RedisStorage)
        bridge = storage.bridge
        assert isinstance(bridge, RedispyBridge)
        window = policy.item.key_for(policy.name, key)
        return SlidingWindow(
            policy,
            [
                bridge.prefixed_key(storage._previous_window_key(window)),
                bridge.prefixed_key(storage._current_window_key(window)),
            ],
            cast(AsyncScript, bridge.lua_acquire_sliding_window),
            cast(AsyncScript, bridge.lua_sliding_window),
        )

    async def ping(self) -> bool:
        try:
            return bool(await self.storage.check())
        except Exception:
            return False


class ClientAddress:
    """The client's IP: the peer's, or, when the peer is a trusted proxy, the right-most
    address in X-Forwarded-For that is not itself a trusted proxy."""

    def __init__(self, trusted_proxies: list[str]) -> None:
        self._trusted: list[IpNetwork] = [
            ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies
        ]

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def scheme(self, peer: str, scheme: str, forwarded_proto: bytes | None) -> str:
        """The scheme the client used: a trusted proxy's X-Forwarded-Proto (its first value,
        http or https), else the scheme of the connection to the gateway."""
        if forwarded_proto and self._trusted and self.is_trusted(peer):
            first = forwarded_proto.decode("latin-1").split(",")[0].strip().lower()
            if first in ("http", "https"):
                return first
        return scheme

    def resolve(self, peer: str, forwarded_for: str | None) -> str:
        if not self._trusted or not forwarded_for or not self.is_trusted(peer):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if not hop:
                continue
            if not self.is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer
        return peer
