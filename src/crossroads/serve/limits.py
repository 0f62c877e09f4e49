"""The server's rate limits: requests per client, and wrong keys per address.

Two token buckets guard a request.  ``requests:`` allows ``security.rate_limit_per_s`` on
average in bursts of ``rate_burst``, per client key (hashed) when the server has client keys,
else per client address: without keys a bearer token proves nothing, so a new one per
request does not buy a new bucket.  ``auth_failures:`` counts wrong keys (client or admin)
per address: after ``max_auth_failures`` within ``auth_failure_window_s`` every request from
that address that needs a key gets 429, the right key included (else a guesser would tell a
right key by its 200), and one more try is let in per ``window / max_auth_failures`` seconds.

The buckets live in the store's ``rate_limits`` table, shared by every replica
(:class:`crossroads.store.rate_limits.SharedBuckets`), when ``security.rate_limit_shared``
is true, which is the default for a PostgreSQL store; else in this process's memory.  If
the store cannot be reached the limits fall back to memory (per replica) rather than refuse
every request.
"""

from __future__ import annotations

import logging
import math
import time

from crossroads.serve.config import ServeConfig
from crossroads.store.rate_limits import IDLE_ROW_S, PRUNE_EVERY, SharedBuckets, bucket_name
from crossroads.store.sql import parse_store_url

log = logging.getLogger("crossroads.serve")


class MemoryBuckets:
    """The same buckets as :class:`SharedBuckets`, in one process's memory."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket -> (tokens, monotonic time)
        self._takes = 0

    def take(self, bucket: str, rate_per_s: float, burst: float) -> float:
        tokens = self._level(bucket, rate_per_s, burst)
        self._takes += 1
        if self._takes % PRUNE_EVERY == 0:
            old = time.monotonic() - IDLE_ROW_S
            self._buckets = {name: value for name, value in self._buckets.items() if value[1] >= old}
        if tokens >= 1:
            self._buckets[bucket] = (tokens - 1, time.monotonic())
            return 0.0
        self._buckets[bucket] = (tokens, time.monotonic())
        return (1 - tokens) / rate_per_s

    def wait_s(self, bucket: str, rate_per_s: float, burst: float) -> float:
        tokens = self._level(bucket, rate_per_s, burst)
        return 0.0 if tokens >= 1 else (1 - tokens) / rate_per_s

    def close(self) -> None:
        pass

    def _level(self, bucket: str, rate_per_s: float, burst: float) -> float:
        now = time.monotonic()
        tokens, last = self._buckets.get(bucket, (float(burst), now))
        return min(float(burst), tokens + (now - last) * rate_per_s)


class Limits:
    """The buckets of one config; each method answers 0.0 to let a request go, else the seconds to wait."""

    def __init__(self, config: ServeConfig, previous: Limits | None = None):
        security = config.security
        self.rate_per_s, self.burst = security.rate_limit_per_s, security.rate_burst
        self.max_auth_failures = security.max_auth_failures
        self.auth_rate_per_s = security.max_auth_failures / security.auth_failure_window_s
        shared = security.rate_limit_shared
        if shared is None:
            shared = parse_store_url(config.store)[0] == "postgresql"
        self.url = config.store if shared else None
        self._memory = previous._memory if previous is not None else MemoryBuckets()
        if previous is not None and previous.url == self.url:
            self._shared = previous._shared
        else:
            if previous is not None:
                previous.close()
            self._shared = SharedBuckets(self.url) if self.url else None

    @property
    def shared(self) -> bool:
        """Whether the buckets are in the store (a call then costs a database round trip: run it off the loop)."""
        return self._shared is not None

    def request(self, client_key: str | None, address: str) -> float:
        """Count a request of ``client_key`` (a key the server accepted) or, without keys, of ``address``."""
        if self.rate_per_s is None:
            return 0.0
        bucket = (bucket_name("requests:key", client_key, secret=True) if client_key is not None
                  else bucket_name("requests:address", address))
        return self._call("take", bucket, self.rate_per_s, self.burst)

    def virtual_key(self, key_id: str, rate_per_s: float, burst: float) -> float:
        """Count a request of the virtual key ``key_id`` against its own limit (see :mod:`crossroads.serve.keys`)."""
        return self._call("take", bucket_name("requests:virtual_key", key_id), rate_per_s, burst)

    def auth_locked(self, address: str) -> float:
        """Whether ``address`` sent too many wrong keys lately (nothing is counted)."""
        return self._call("wait_s", bucket_name("auth_failures:address", address), self.auth_rate_per_s,
                          self.max_auth_failures)

    def auth_failed(self, address: str) -> float:
        """Count a wrong key from ``address``; > 0 once it has sent too many."""
        return self._call("take", bucket_name("auth_failures:address", address), self.auth_rate_per_s,
                          self.max_auth_failures)

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()

    def _call(self, method: str, bucket: str, rate_per_s: float, burst: float) -> float:
        if self._shared is not None:
            try:
                return getattr(self._shared, method)(bucket, rate_per_s, burst)
            except Exception as e:  # noqa: BLE001 (a store outage must not turn into refusing every request)
                log.warning("rate limits: the store is unreachable (%s); limiting per replica meanwhile", e)
        return getattr(self._memory, method)(bucket, rate_per_s, burst)


def retry_after(wait_s: float) -> dict[str, str]:
    """The ``Retry-After`` header for a wait of ``wait_s`` seconds (whole seconds, at least 1)."""
    return {"retry-after": str(max(1, math.ceil(wait_s)))}
