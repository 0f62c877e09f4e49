"""Token buckets that every replica shares: one row per bucket in the store's ``rate_limits`` table.

A bucket holds at most ``burst`` tokens and refills at ``rate_per_s``; a request takes one.
Taking a token is one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` statement, so it is
atomic on PostgreSQL (the row lock orders replicas) and on SQLite (a statement is a write
transaction), costs one round trip, and times come from the database's clock, which every
replica reads alike.  The buckets use a connection of their own, so a slow store read never
holds up the limiter nor the other way round.
"""

from __future__ import annotations

import hashlib
import math
import threading

from crossroads.errors import CrossroadsError
from crossroads.store.sql import Database, connect

#: Every this many takes, rows untouched for ``IDLE_ROW_S`` are deleted (a missing row is a full bucket).
PRUNE_EVERY = 1000
#: A bucket idle this long is full again for any limit whose ``burst / rate_per_s`` is at most this.
IDLE_ROW_S = 3600.0
# The row keeps the tokens left after the last request.  A refused request stores ``refilled - 1``,
# which is negative: it marks the refusal in the one value RETURNING gives back, and the tokens
# actually left are that value + 1 (read back by ``_LEFT``).
_LEFT = "CASE WHEN rate_limits.tokens < 0 THEN rate_limits.tokens + 1 ELSE rate_limits.tokens END"
_MIN_MAX = {"sqlite": ("MIN", "MAX"), "postgresql": ("LEAST", "GREATEST")}


def bucket_name(kind: str, who: str, *, secret: bool = False) -> str:
    """The row key of ``kind`` (e.g. ``requests``) for ``who``; a ``secret`` (a client key) is stored hashed."""
    if secret:
        who = "sha256:" + hashlib.sha256(who.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{kind}:{who}"


class SharedBuckets:
    """Token buckets in the store at ``url`` (whose schema is already migrated, version 4 or later)."""

    def __init__(self, url: str):
        self.url = url
        self._db: Database = connect(url)
        self._takes = 0
        self._count_lock = threading.Lock()

    def take(self, bucket: str, rate_per_s: float, burst: float) -> float:
        """Take a token: 0.0 if there was one (the request may go), else the seconds until one refills."""
        _check(rate_per_s, burst)
        least, greatest = _MIN_MAX[self._db.name]
        now = self._db.types["now_s"]
        refilled = (f"{least}({float(burst)!r}, {_LEFT} + {greatest}(0, {now} - rate_limits.updated_s) * "
                    f"{float(rate_per_s)!r})")
        rows = self._db.execute(
            f"INSERT INTO rate_limits (bucket, tokens, updated_s) VALUES (?, {float(burst) - 1!r}, {now}) "
            f"ON CONFLICT (bucket) DO UPDATE SET tokens = {refilled} - 1, updated_s = {now} RETURNING tokens",
            (bucket,))
        self._maybe_prune()
        left = float(rows[0][0])
        return 0.0 if left >= 0 else -left / rate_per_s

    def wait_s(self, bucket: str, rate_per_s: float, burst: float) -> float:
        """Without taking anything: 0.0 if the bucket holds a token, else the seconds until it does."""
        _check(rate_per_s, burst)
        rows = self._db.execute(
            f"SELECT {_LEFT}, {self._db.types['now_s']} - rate_limits.updated_s FROM rate_limits WHERE bucket = ?",
            (bucket,))
        if not rows:
            return 0.0
        left = min(float(burst), float(rows[0][0]) + max(0.0, float(rows[0][1])) * rate_per_s)
        return 0.0 if left >= 1 else (1 - left) / rate_per_s

    def close(self) -> None:
        self._db.close()

    def _maybe_prune(self) -> None:
        with self._count_lock:
            self._takes += 1
            if self._takes % PRUNE_EVERY:
                return
        self._db.execute(f"DELETE FROM rate_limits WHERE updated_s < {self._db.types['now_s']} - ?", (IDLE_ROW_S,))


def _check(rate_per_s: float, burst: float) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0 and math.isfinite(burst) and burst >= 1):
        raise CrossroadsError(f"a rate limit needs rate_per_s > 0 and burst >= 1, got {rate_per_s!r} and {burst!r}")
