"""What a scope (a route; later a key or a team) has spent, read from the decisions and outcomes tables.

Budgets read spend through :class:`SpendLedger` only, so that every replica sharing one
PostgreSQL store sees the same figure.  It uses a connection of its own (as the shared rate
limits do), so a budget read never waits behind the store's other reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from crossroads.store.records import decision_window
from crossroads.store.sql import Database, connect, parse_store_url

#: Most decision ids asked about in one query.
IDS_PER_QUERY = 500


class SpendLedger:
    """Spend in US$ of the served answers of a route's decisions, from the database ``db`` (or a store URL)."""

    def __init__(self, db: Database | str):
        self._own = isinstance(db, str)
        self._db = connect(db) if isinstance(db, str) else db

    @classmethod
    def for_store(cls, url: str, store: object) -> SpendLedger | None:
        """A ledger on the store at ``url``: its own connection, or for SQLite in memory the store's own (None if
        it has none: nothing else can see that database)."""
        if parse_store_url(url)[1] != ":memory:":
            return cls(url)
        db = getattr(store, "_db", None)
        return cls(db) if isinstance(db, Database) else None

    def route_spend_usd(self, route: str, since_s: float, until_s: float | None = None) -> float:
        """The sum of ``outcomes.cost_usd`` of the decisions made on ``route`` in ``[since_s, until_s)``."""
        where, params = decision_window(route, float(since_s), None if until_s is None else float(until_s))
        rows = self._db.execute(
            f"SELECT SUM(o.cost_usd) FROM outcomes o JOIN decisions d ON d.decision_id = o.decision_id WHERE {where}",
            params)
        return float(rows[0][0] or 0.0) if rows else 0.0

    def hourly_arrivals(self, route: str, since_s: float, until_s: float) -> list[int]:
        """Decisions on ``route`` made in ``[since_s, until_s)`` per UTC hour of the day (24 counts)."""
        hour = ("CAST(d.created_s / 3600 AS INTEGER) % 24" if self._db.name == "sqlite"
                else "MOD(CAST(FLOOR(d.created_s / 3600) AS BIGINT), 24)")
        rows = self._db.execute(f"SELECT {hour}, COUNT(*) FROM decisions d WHERE d.route = ? AND d.created_s >= ? "
                                f"AND d.created_s < ? GROUP BY {hour}", [route, float(since_s), float(until_s)])
        counts = [0] * 24
        for bin_, count in rows:
            counts[int(bin_) % 24] += int(count)
        return counts

    def settled(self, decision_ids: Iterable[str]) -> set[str]:
        """The decisions among ``decision_ids`` whose outcome is stored (their cost counts in the sums above)."""
        ids, found = list(decision_ids), set()
        for i in range(0, len(ids), IDS_PER_QUERY):
            chunk = ids[i:i + IDS_PER_QUERY]
            marks = ", ".join("?" * len(chunk))
            found.update(row[0] for row in self._db.execute(
                f"SELECT decision_id FROM outcomes WHERE decision_id IN ({marks})", chunk))
        return found

    def close(self) -> None:
        if self._own:
            self._db.close()
