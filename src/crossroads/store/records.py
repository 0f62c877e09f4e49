"""Durable storage for the routing server: decisions, outcomes, feedback and learner state.

SQLite (a file, the default) or PostgreSQL (shared by several server processes).
Decisions and outcomes go through a queue to one background writer thread that
commits them in batches, so recording costs the request path microseconds; feedback
and learner state are written synchronously, committed before the call returns.
The SQL that differs between the two databases lives in :mod:`crossroads.store.sql`.
"""

from __future__ import annotations

import copy
import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from itertools import groupby
from typing import Any, Self

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.store.spool import Spool
from crossroads.store.sql import MIGRATION_LOCK_KEY, Database, connect, unavailable

log = logging.getLogger(__name__)

#: A missing feedback ``seq`` older than this (by the database clock) is taken for a rolled-back insert.
GAP_TIMEOUT_S = 5.0
#: Most queued rows the writer commits in one transaction.
WRITER_BATCH = 500
#: Most rows waiting for the writer; recording blocks beyond this rather than grow without bound.
WRITER_QUEUE_ROWS = 100_000

#: Schema steps in order; step ``i`` brings the schema to version ``i + 1``.  The type names in
#: braces are filled in per database (see ``Database.types``).  Append new steps; never edit old ones.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE decisions (
            decision_id TEXT PRIMARY KEY, route TEXT NOT NULL, model TEXT NOT NULL, learner_key TEXT,
            candidates TEXT NOT NULL, probability {float}, scores TEXT, context {blob},
            created_s {float} NOT NULL, prompt TEXT)""",
        """CREATE TABLE outcomes (
            decision_id TEXT PRIMARY KEY, model TEXT NOT NULL, status TEXT NOT NULL, cost_usd {float},
            latency_s {float}, ttft_s {float}, tokens_in BIGINT, tokens_out BIGINT,
            fallbacks INTEGER NOT NULL, error TEXT, response TEXT, created_s {float} NOT NULL)""",
        """CREATE TABLE feedback (
            seq {seq_pk}, decision_id TEXT NOT NULL, reward {float}, quality {float}, payload TEXT,
            created_s {float} NOT NULL, stored_s {float} NOT NULL DEFAULT ({now_s}))""",
        "CREATE INDEX feedback_decision_id ON feedback (decision_id)",
        """CREATE TABLE learner_state (
            key TEXT PRIMARY KEY, state TEXT NOT NULL, cursor BIGINT NOT NULL, saved_s {float} NOT NULL)""",
    ],
    [  # version 2: what reports need, each decision's category and the pool's prices; who sent a feedback
        "ALTER TABLE decisions ADD COLUMN category TEXT",
        "ALTER TABLE feedback ADD COLUMN source TEXT",
        "CREATE INDEX decisions_created_s ON decisions (created_s)",
        """CREATE TABLE pool (
            model TEXT PRIMARY KEY, price_per_mtok_in {float} NOT NULL, price_per_mtok_out {float} NOT NULL,
            seen_s {float} NOT NULL)""",
    ],
    [  # version 3: shadow outcomes (other models called for a decision, never returned); whose answer a feedback judged
        """CREATE TABLE shadow_outcomes (
            decision_id TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, cost_usd {float},
            latency_s {float}, tokens_in BIGINT, tokens_out BIGINT, error TEXT, response TEXT,
            created_s {float} NOT NULL, PRIMARY KEY (decision_id, model))""",
        "ALTER TABLE feedback ADD COLUMN model TEXT",
    ],
    [  # version 4: who made a decision, idempotent feedback, rate limits every replica shares
        "ALTER TABLE decisions ADD COLUMN client TEXT",
        "ALTER TABLE feedback ADD COLUMN idempotency_key TEXT",
        "CREATE UNIQUE INDEX feedback_idempotency_key ON feedback (idempotency_key)",
        """CREATE TABLE rate_limits (
            bucket TEXT PRIMARY KEY, tokens {float} NOT NULL, updated_s {float} NOT NULL)""",
    ],
    [  # version 5: virtual keys (secrets hashed) and their teams, what each key spent, whose key made a decision
        "CREATE TABLE teams (name TEXT PRIMARY KEY, created_s {float} NOT NULL)",
        """CREATE TABLE keys (
            key_id TEXT PRIMARY KEY, name TEXT NOT NULL, team TEXT NOT NULL REFERENCES teams (name),
            key_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, routes TEXT, models TEXT, rate_limit_per_s {float},
            rate_burst INTEGER, budget TEXT, expires_s {float}, revoked_s {float}, created_s {float} NOT NULL,
            updated_s {float} NOT NULL)""",
        "CREATE INDEX keys_team ON keys (team)",
        """CREATE TABLE key_spend (
            key_id TEXT NOT NULL, period TEXT NOT NULL, spent_usd {float} NOT NULL, PRIMARY KEY (key_id, period))""",
        "ALTER TABLE decisions ADD COLUMN key_id TEXT",
        "ALTER TABLE decisions ADD COLUMN team TEXT",
    ],
    [  # version 6: a team's budget and what each team spent (its keys' spend so far carried over)
        "ALTER TABLE teams ADD COLUMN budget TEXT",
        """CREATE TABLE team_spend (
            team TEXT NOT NULL, period TEXT NOT NULL, spent_usd {float} NOT NULL, PRIMARY KEY (team, period))""",
        """INSERT INTO team_spend (team, period, spent_usd)
            SELECT k.team, s.period, SUM(s.spent_usd) FROM key_spend s JOIN keys k ON k.key_id = s.key_id
            GROUP BY k.team, s.period""",
    ],
    [  # version 7: every model a cascade called for a decision, in order (JSON), beside the answer it returned
        "ALTER TABLE outcomes ADD COLUMN calls TEXT",
    ],
    [  # version 8: a team's decisions newest first (the dashboard's decision log for a team key) without a scan
        "CREATE INDEX decisions_team_created_s ON decisions (team, created_s)",
    ],
]

TABLES = ("decisions", "outcomes", "shadow_outcomes", "feedback", "learner_state", "pool", "rate_limits")
_DECISION_COLUMNS = (
    "decision_id, route, model, learner_key, candidates, probability, scores, context, created_s, prompt, category, "
    "client, key_id, team"
)
_OUTCOME_COLUMNS = (
    "model, status, cost_usd, latency_s, ttft_s, tokens_in, tokens_out, fallbacks, error, response, created_s, calls"
)
# ON CONFLICT DO NOTHING: a decision replayed from the spool may have been committed before the outage was noticed
_INSERT_DECISION = (f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (decision_id) DO NOTHING")
_UPSERT_OUTCOME = (
    f"INSERT INTO outcomes (decision_id, {_OUTCOME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (decision_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _OUTCOME_COLUMNS.split(", "))
)
_SHADOW_COLUMNS = "model, status, cost_usd, latency_s, tokens_in, tokens_out, error, response, created_s"
_UPSERT_SHADOW = (
    f"INSERT INTO shadow_outcomes (decision_id, {_SHADOW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (decision_id, model) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SHADOW_COLUMNS.split(", ")[1:])
)
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (decision_id, reward, quality, payload, created_s, source, model, idempotency_key) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: The queued statements by the name the spool keeps them under.
_SPOOLED = {"decision": _INSERT_DECISION, "outcome": _UPSERT_OUTCOME, "shadow_outcome": _UPSERT_SHADOW}
_SPOOL_KIND = {sql: kind for kind, sql in _SPOOLED.items()}


def _from_spool(kind: str, params: tuple) -> tuple[str, tuple]:
    """A spooled row as a statement and its values; a decision or outcome spooled by an older schema (fewer
    columns: the newer ones were added at the end) gets None for the columns it lacks."""
    columns = {"decision": len(_DECISION_COLUMNS.split(", ")), "outcome": 1 + len(_OUTCOME_COLUMNS.split(", "))}
    if kind in columns:
        params = tuple(params) + (None,) * (columns[kind] - len(params))
    return _SPOOLED[kind], params
#: While rows wait in the spool, the writer tries to replay them this often.
REPLAY_INTERVAL_S = 1.0
#: Who sent a feedback when nobody said: the application's users (labellers will name themselves).
USER_SOURCE = "user"
_STOP = object()

#: What :meth:`Store.traffic` yields per decision, and the SQL that reads each.
TRAFFIC = {
    "route": "d.route", "chosen": "d.model", "propensity": "d.probability", "created_s": "d.created_s",
    "category": "d.category", "model": "o.model", "status": "o.status", "cost_usd": "o.cost_usd",
    "latency_s": "o.latency_s", "tokens_in": "o.tokens_in", "tokens_out": "o.tokens_out",
    "fallbacks": "o.fallbacks", "quality": "f.quality", "reward": "f.reward",
}
TRAFFIC_COLUMNS = tuple(TRAFFIC)
TRAFFIC_COLUMNS_SQL = tuple(TRAFFIC.values())
#: Rows per chunk of :meth:`Store.traffic`.
TRAFFIC_CHUNK_ROWS = 50_000
#: Answers per page of :meth:`Store.labelling_work` (each is judged by an LLM: pages need not be big).
LABELLING_CHUNK_ROWS = 500


class DuplicateFeedbackError(CrossroadsError):
    """Feedback for a decision that has feedback already, where a decision takes one."""

    def __init__(self, decision_id: str, feedback_id: int):
        self.decision_id, self.feedback_id = decision_id, feedback_id
        super().__init__(f"decision {decision_id!r} has feedback already (feedback_id {feedback_id}): a decision "
                         "takes one, so this one was not stored")


class UnknownDecisionError(CrossroadsError):
    """Feedback names a decision the store has never recorded."""

    def __init__(self, decision_id: str):
        self.decision_id = decision_id
        super().__init__(
            f"unknown decision {decision_id!r}: feedback must name the decision_id returned with a routed response"
        )


def open_store(url: str, spool: Spool | None = None) -> Store:
    """The store at ``url`` with its schema brought up to date (see ``crossroads.store.sql.URL_FORMS``).

    ``spool`` keeps the rows the database cannot take during an outage (see :mod:`crossroads.store.spool`).
    """
    return Store(connect(url), spool)


class Store:
    """Decisions, outcomes, feedback and learner state in one database; safe to share between threads.

    Use as a context manager, or call :meth:`close`: decisions still queued are written then.
    """

    def __init__(self, db: Database, spool: Spool | None = None):
        self._db = db
        self._spool = spool
        self._replayed_s = 0.0  # when the writer last tried to replay the spool
        try:
            self.schema_version = migrate(db)
            self._writer_db = db.writer()
        except BaseException:
            db.close()
            raise
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=WRITER_QUEUE_ROWS)
        self._put_lock = threading.Lock()
        # rows queued per decision id, so that reading a decision waits for the writer only when it has some of its
        # rows (a flush per lookup made 200 lookups of unknown ids take over 1 s: a thread handoff each)
        self._queued: dict[str, int] = {}
        self._queued_lock = threading.Lock()
        self._closed = False
        self._reader: Store | None = None  # see reader()
        self._reader_lock = threading.Lock()
        self._reads_for: Store | None = None  # on a reader: the store it reads for
        self._writer = threading.Thread(target=self._write_loop, name="crossroads-store-writer", daemon=True)
        self._writer.start()

    # -- decisions and outcomes (queued) -------------------------------------------------
    def record_decision(
        self,
        decision_id: str,
        *,
        route: str,
        model: str,
        learner_key: str | None,
        candidates: list[str],
        probability: float | None,
        scores: dict | None,
        context: np.ndarray | None,
        created_s: float,
        prompt: str | None = None,
        category: str | None = None,
        client: str | None = None,
        key_id: str | None = None,
        team: str | None = None,
    ) -> None:
        """Queue a decision; ``context`` (the prompt embedding) is kept as float32, ``prompt`` only if given.

        ``client`` identifies who asked (the server stores a sha256 hex digest of the client key, never the key);
        ``key_id`` and ``team`` name the virtual key it used and that key's team then (see :mod:`crossroads.store.keys`).
        """
        blob = None if context is None else np.asarray(context, dtype=np.float32).ravel().tobytes()
        scores_json = None if scores is None else _dumps(scores)
        row = (decision_id, route, model, learner_key, _dumps(list(candidates)), _float(probability), scores_json,
               blob, float(created_s), prompt, category, client, key_id, team)
        self._put((_INSERT_DECISION, row))

    def record_outcome(
        self,
        decision_id: str,
        *,
        model: str,
        status: str,
        cost_usd: float | None,
        latency_s: float | None,
        ttft_s: float | None,
        tokens_in: int | None,
        tokens_out: int | None,
        fallbacks: int,
        error: str | None = None,
        response: str | None = None,
        calls: list[dict] | None = None,
    ) -> None:
        """Queue what happened to a decision; ``model`` answered it (after ``fallbacks`` fallbacks).

        ``calls`` lists every model a cascade called, in order (model, status, cost, latency, tokens, the
        verifier's trust); ``cost_usd`` is then their sum.  A second outcome for the same decision replaces the first.
        """
        row = (decision_id, model, status, _float(cost_usd), _float(latency_s), _float(ttft_s),
               _int(tokens_in), _int(tokens_out), int(fallbacks), error, response, time.time(),
               None if calls is None else _dumps(calls))
        self._put((_UPSERT_OUTCOME, row))

    def record_shadow_outcome(
        self,
        decision_id: str,
        *,
        model: str,
        status: str,
        cost_usd: float | None,
        latency_s: float | None,
        tokens_in: int | None,
        tokens_out: int | None,
        error: str | None = None,
        response: str | None = None,
    ) -> None:
        """Queue the answer of ``model``, called in the background for a decision it did not serve.

        Shadow outcomes are never returned to the client; they tell what another model would
        have done on the same request (full information for reports and training).  A second
        shadow outcome of the same model for the same decision replaces the first.
        """
        row = (decision_id, model, status, _float(cost_usd), _float(latency_s), _int(tokens_in), _int(tokens_out),
               error, response, time.time())
        self._put((_UPSERT_SHADOW, row))

    def flush(self) -> None:
        """Wait until every decision and outcome queued before this call is committed."""
        done = threading.Event()
        self.when_written(done.set)
        done.wait()

    def when_written(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every decision and outcome queued before this call is committed (or, while the
        database is out, fsync'd to the spool): from the writer thread, or at once when the store is closed."""
        with self._put_lock:
            if not self._closed:
                self._queue.put(callback)
                return
        callback()

    def decision(self, decision_id: str, *, flush: bool = True) -> dict | None:
        """A recorded decision with its ``outcome`` (or ``None``); ``None`` if there is no such decision.

        Waits for the writer when this process has rows of the decision queued; ``flush=False`` never waits.
        """
        if flush and decision_id in self._queued:
            self.flush()
        rows = self._db.execute(
            f"SELECT {_prefixed('d', _DECISION_COLUMNS)}, o.decision_id, {_prefixed('o', _OUTCOME_COLUMNS)} "
            "FROM decisions d LEFT JOIN outcomes o ON o.decision_id = d.decision_id WHERE d.decision_id = ?",
            (decision_id,),
        )
        if not rows:
            return None
        row = rows[0]
        n_decision = len(_DECISION_COLUMNS.split(", "))
        decision = dict(zip(_DECISION_COLUMNS.split(", "), row[:n_decision]))
        decision["candidates"] = json.loads(decision["candidates"])
        decision["scores"] = _loads(decision["scores"])
        decision["context"] = _context(decision["context"])
        outcome = row[n_decision:]
        decision["outcome"] = None if outcome[0] is None else dict(zip(_OUTCOME_COLUMNS.split(", "), outcome[1:]))
        if decision["outcome"] is not None:
            decision["outcome"]["calls"] = _loads(decision["outcome"]["calls"])
        return decision

    # -- feedback (synchronous) ----------------------------------------------------------
    def add_feedback(
        self, decision_id: str, *, reward: float | None, quality: float | None, payload: dict | None,
        created_s: float, once: bool = False, source: str = USER_SOURCE, model: str | None = None,
        idempotency_key: str | None = None,
    ) -> int:
        """Store feedback on a decision, committed to disk before returning; its sequence number.

        ``source`` says who judged the answer (``user``, or e.g. ``judge:gpt-4o`` for a
        labeller), so that reports can keep users' verdicts apart.  ``model`` names the model
        whose answer was judged when that is a shadow outcome's; None (the default) means the
        answer the client was served.  More than one feedback per decision is kept (one row
        each), unless ``once``: then a decision that has feedback from the same source on the
        same answer already raises :class:`DuplicateFeedbackError`, also when two processes
        send it at the same time.  ``idempotency_key`` is stored with it (unique: a second insert
        with the same key fails); :meth:`feedback_with_key` finds the feedback by it.
        """
        if not self._known(decision_id):
            self.flush()  # the decision may still be waiting in the writer's queue
            if not self._known(decision_id):
                raise UnknownDecisionError(decision_id)
        row = (decision_id, _float(reward), _float(quality), None if payload is None else _dumps(payload),
               float(created_s), source, model, idempotency_key)
        if not once:
            return self._db.insert_returning_seq(_INSERT_FEEDBACK, row)
        with self._db.transaction():
            self._db.lock(zlib.crc32(decision_id.encode("utf-8", "surrogatepass")))
            earlier = self._db.execute(
                f"SELECT MIN(seq) FROM feedback WHERE decision_id = ? AND COALESCE(source, '{USER_SOURCE}') = ? "
                "AND COALESCE(model, '') = ?", (decision_id, source, model or ""))
            if earlier[0][0] is not None:
                raise DuplicateFeedbackError(decision_id, int(earlier[0][0]))
            return self._db.insert_returning_seq(_INSERT_FEEDBACK, row)

    def feedback_with_key(self, idempotency_key: str) -> dict | None:
        """The feedback stored with ``idempotency_key`` (``seq, decision_id, reward, quality``), or None."""
        rows = self._db.execute("SELECT seq, decision_id, reward, quality FROM feedback WHERE idempotency_key = ?",
                                (idempotency_key,))
        if not rows:
            return None
        seq, decision_id, reward, quality = rows[0]
        return {"seq": int(seq), "decision_id": decision_id, "reward": _float(reward), "quality": _float(quality)}

    def cascade_feedback(self, route: str, limit: int) -> list[tuple[float | None, float]]:
        """The latest ``limit`` feedbacks with a quality on ``route``'s cascade decisions, newest first: each as the
        verifier's own trust in the answer returned (its ``raw_trust`` in the outcome's ``calls``) and the quality."""
        rows = self._db.execute(
            "SELECT o.model, o.calls, f.quality FROM feedback f JOIN decisions d ON d.decision_id = f.decision_id "
            "JOIN outcomes o ON o.decision_id = f.decision_id "
            "WHERE d.route = ? AND o.calls IS NOT NULL AND f.quality IS NOT NULL ORDER BY f.seq DESC LIMIT ?",
            (route, int(limit)),
        )
        pairs = []
        for model, calls, quality in rows:
            returned = [call for call in json.loads(calls) if call.get("model") == model and "raw_trust" in call]
            pairs.append((_float(returned[-1]["raw_trust"]) if returned else None, float(quality)))
        return pairs

    def feedback_since(self, cursor: int, limit: int = 1000) -> tuple[list[dict], int]:
        """Feedback with ``seq > cursor`` in ``seq`` order, joined with its decision; and the new cursor.

        Each row has ``seq, decision_id, reward, quality, payload, created_s`` and the decision's
        ``route, learner_key, context``, ``prior`` (the expected rewards a learner started from, if
        any) and ``model`` (the model that answered, if there is an outcome).

        Sequence numbers are taken when a row is inserted but become visible when it commits, so
        with concurrent writers (PostgreSQL) ``seq`` 7 can appear after 8 was read.  The cursor
        therefore never moves past a missing ``seq``: rows after a gap are held back until the
        gap fills, or until the first row after it was stored ``GAP_TIMEOUT_S`` ago by the
        database's clock; then the missing row is taken for a rolled-back insert and skipped.
        (A feedback insert commits within milliseconds, so one still open after 5 s has failed; a row
        that did commit later than that would be missed by readers already past it.)
        """
        if limit < 1:
            raise CrossroadsError(f"limit must be at least 1, got {limit}")
        rows = self._db.execute(
            "SELECT f.seq, f.decision_id, f.reward, f.quality, f.payload, f.created_s, f.stored_s, "
            "d.route, COALESCE(f.model, o.model, d.model), d.learner_key, d.context, d.scores FROM feedback f "
            "LEFT JOIN decisions d ON d.decision_id = f.decision_id "
            "LEFT JOIN outcomes o ON o.decision_id = f.decision_id "
            "WHERE f.seq > ? ORDER BY f.seq LIMIT ?",
            (int(cursor), int(limit)),
        )
        feedback: list[dict] = []
        now_s: float | None = None
        for seq, decision_id, reward, quality, payload, created_s, stored_s, route, model, key, context, scores in rows:
            if seq != cursor + 1:
                now_s = self._db.now_s() if now_s is None else now_s
                if stored_s > now_s - GAP_TIMEOUT_S:
                    break
                log.warning("feedback seq %d..%d never committed; skipping them", cursor + 1, seq - 1)
            feedback.append({"seq": seq, "decision_id": decision_id, "reward": reward, "quality": quality,
                             "payload": _loads(payload), "created_s": created_s, "route": route,
                             "model": model, "learner_key": key, "context": _context(context),
                             "prior": (_loads(scores) or {}).get("prior")})
            cursor = seq
        return feedback, cursor

    # -- the pool (synchronous) -----------------------------------------------------------
    def record_pool(self, prices: dict[str, tuple[float, float]]) -> None:
        """Keep each model's price (US$ per million tokens in, out), as a server serving them sees it now.

        Reports price what every request would have cost on each model with these.
        """
        now = time.time()
        with self._db.transaction():
            for model, (price_in, price_out) in prices.items():
                self._db.execute(
                    "INSERT INTO pool (model, price_per_mtok_in, price_per_mtok_out, seen_s) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (model) DO UPDATE SET price_per_mtok_in = excluded.price_per_mtok_in, "
                    "price_per_mtok_out = excluded.price_per_mtok_out, seen_s = excluded.seen_s",
                    (model, float(price_in), float(price_out), now))

    def pool(self) -> dict[str, tuple[float, float]]:
        """The prices :meth:`record_pool` kept, by model."""
        rows = self._db.execute("SELECT model, price_per_mtok_in, price_per_mtok_out FROM pool ORDER BY model")
        return {model: (float(price_in), float(price_out)) for model, price_in, price_out in rows}

    # -- reading the traffic back ---------------------------------------------------------
    def traffic(self, *, route: str | None = None, since_s: float | None = None, until_s: float | None = None,
                team: str | None = None, chunk_rows: int = TRAFFIC_CHUNK_ROWS) -> Iterator[list[tuple]]:
        """Every decision made in ``[since_s, until_s)`` (on ``route``, by ``team``'s keys), with its outcome and first
        feedback.

        Yields lists of at most ``chunk_rows`` tuples holding :data:`TRAFFIC_COLUMNS`, in
        ``created_s`` order, read with a cursor so that a million decisions never sit in
        memory at once.  ``quality`` and ``reward`` are those of the first feedback from
        users (``source`` user or unset) on the served answer; outcome columns are None for a decision never
        carried out.
        """
        self.flush()
        where, params = decision_window(route, since_s, until_s, team)
        sql = (f"SELECT {', '.join(TRAFFIC_COLUMNS_SQL)} FROM decisions d "
               "LEFT JOIN outcomes o ON o.decision_id = d.decision_id "
               "LEFT JOIN (SELECT decision_id, MIN(seq) AS seq FROM feedback "
               f"WHERE COALESCE(source, '{USER_SOURCE}') = '{USER_SOURCE}' AND model IS NULL GROUP BY decision_id) ff "
               "ON ff.decision_id = d.decision_id LEFT JOIN feedback f ON f.seq = ff.seq "
               f"WHERE {where} ORDER BY d.created_s")
        yield from self._db.stream(sql, params, chunk_rows)

    def routes(self) -> list[str]:
        """Every route a decision was recorded on."""
        self.flush()
        return [route for (route,) in self._db.execute("SELECT DISTINCT route FROM decisions ORDER BY route")]

    # -- shadow spend (synchronous) ---------------------------------------------------------
    def shadow_spend(self, *, route: str | None = None, since_s: float | None = None, until_s: float | None = None,
                     team: str | None = None) -> dict[str, dict[str, float | int]]:
        """Shadow calls per model for the decisions made in ``[since_s, until_s)`` (on ``route``, by ``team``'s keys).

        Each model maps to ``calls``, ``errors`` (calls whose status is not ok) and ``spend_usd``
        (calls of unknown cost count nothing).  Daily caps and ``crossroads report`` read it.
        """
        self.flush()
        where, params = decision_window(route, since_s, until_s, team)
        rows = self._db.execute(
            "SELECT s.model, COUNT(*), SUM(CASE WHEN s.status = 'ok' THEN 0 ELSE 1 END), SUM(s.cost_usd) "
            "FROM shadow_outcomes s JOIN decisions d ON d.decision_id = s.decision_id "
            f"WHERE {where} GROUP BY s.model ORDER BY s.model", params)
        return {model: {"calls": int(calls), "errors": int(errors or 0), "spend_usd": float(spend or 0.0)}
                for model, calls, errors, spend in rows}

    # -- labelling work (for `crossroads label`) ---------------------------------------------
    def labelling_work(self, source: str, *, route: str | None = None,
                       chunk_rows: int = LABELLING_CHUNK_ROWS) -> Iterator[list[tuple]]:
        """The answers ``source`` has not judged yet, in lists of (decision_id, model, prompt, response).

        ``model`` is None for the answer the client was served, the shadow model's name for a
        shadow outcome's.  Only decisions stored with their prompt and answers stored with their
        text count.  In (created_s, decision_id, model) order, read one page at a time from the
        last key seen (no cursor stays open between pages), so the caller may store feedback
        while it iterates; answers judged meanwhile drop out of later pages.
        """
        self.flush()
        where_route, route_params = ("AND d.route = ?", [route]) if route is not None else ("", [])
        union = (
            "SELECT d.decision_id, CAST(NULL AS TEXT) AS model, '' AS model_key, d.prompt, o.response, d.created_s "
            "FROM decisions d JOIN outcomes o ON o.decision_id = d.decision_id "
            f"WHERE d.prompt IS NOT NULL AND o.response IS NOT NULL {where_route} AND NOT EXISTS (SELECT 1 FROM "
            f"feedback f WHERE f.decision_id = d.decision_id AND COALESCE(f.source, '{USER_SOURCE}') = ? "
            "AND f.model IS NULL) "
            "UNION ALL SELECT d.decision_id, s.model, s.model, d.prompt, s.response, d.created_s "
            "FROM decisions d JOIN shadow_outcomes s ON s.decision_id = d.decision_id "
            f"WHERE d.prompt IS NOT NULL AND s.response IS NOT NULL {where_route} AND NOT EXISTS (SELECT 1 FROM "
            f"feedback f WHERE f.decision_id = d.decision_id AND COALESCE(f.source, '{USER_SOURCE}') = ? "
            "AND f.model = s.model)")
        params = [*route_params, source, *route_params, source]
        after: tuple | None = None
        while True:
            page = "" if after is None else "WHERE (w.created_s, w.decision_id, w.model_key) > (?, ?, ?) "
            rows = self._db.execute(
                f"SELECT w.decision_id, w.model, w.prompt, w.response, w.created_s, w.model_key FROM ({union}) w "
                f"{page}ORDER BY w.created_s, w.decision_id, w.model_key LIMIT ?",
                [*params, *(after or ()), int(chunk_rows)])
            if not rows:
                return
            after = (rows[-1][4], rows[-1][0], rows[-1][5])
            yield [row[:4] for row in rows]
            if len(rows) < chunk_rows:
                return

    def labelling_counts(self, source: str, *, route: str | None = None) -> dict[str, int]:
        """Where the decisions (on ``route``) stand for labelling by ``source``.

        ``decisions``; ``no_prompt``: decisions stored without their prompt; ``no_text``: answers
        (served or shadow) of decisions with a prompt but stored without text (failed calls, or a
        decision never carried out); ``answers``: answers with text; ``labelled``: those of them
        ``source`` has judged already.
        """
        self.flush()
        where_route, route_params = ("AND d.route = ?", [route]) if route is not None else ("", [])
        (decisions, no_prompt), = self._db.execute(
            f"SELECT COUNT(*), SUM(CASE WHEN d.prompt IS NULL THEN 1 ELSE 0 END) FROM decisions d "
            f"WHERE 1 = 1 {where_route}", route_params)
        judged = (f"EXISTS (SELECT 1 FROM feedback f WHERE f.decision_id = d.decision_id AND "
                  f"COALESCE(f.source, '{USER_SOURCE}') = ? AND COALESCE(f.model, '') = {{model}})")
        counts = {"decisions": int(decisions), "no_prompt": int(no_prompt or 0), "no_text": 0, "answers": 0,
                  "labelled": 0}
        for table, model in (("outcomes", "''"), ("shadow_outcomes", "a.model")):
            join = "LEFT JOIN" if table == "outcomes" else "JOIN"  # a decision without an outcome has no answer
            (no_text, answers, labelled), = self._db.execute(
                "SELECT SUM(CASE WHEN a.response IS NULL THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN a.response IS NULL THEN 0 ELSE 1 END), "
                f"SUM(CASE WHEN a.response IS NOT NULL AND {judged.format(model=model)} THEN 1 ELSE 0 END) "
                f"FROM decisions d {join} {table} a ON a.decision_id = d.decision_id "
                f"WHERE d.prompt IS NOT NULL {where_route}", [source, *route_params])
            counts["no_text"] += int(no_text or 0)
            counts["answers"] += int(answers or 0)
            counts["labelled"] += int(labelled or 0)
        return counts

    # -- the log as a dataset (crossroads logs export; see crossroads.store.export) -------------
    def logged_answers(self, *, route: str | None = None, since_s: float | None = None,
                       until_s: float | None = None, quality_from: str = "any", team: str | None = None,
                       chunk_rows: int = TRAFFIC_CHUNK_ROWS) -> Iterator[list[tuple]]:
        """Every decision made in ``[since_s, until_s)`` (on ``route``, by ``team``'s keys) with its outcome and its
        answer's label.

        Yields chunks of tuples ``(decision_id, route, chosen, propensity, category, prompt, model,
        status, cost_usd, latency_s, response, quality, calls)`` in ``created_s`` order; the outcome's
        columns are None for a decision never carried out, ``calls`` (JSON) for one not made by a cascade.  ``quality`` is that of the first labelled
        feedback on the served answer picked by ``quality_from`` (see :func:`_label_sql`).
        """
        self.flush()
        labels, label_params = _label_sql(quality_from)
        where, params = decision_window(route, since_s, until_s, team)
        sql = ("SELECT d.decision_id, d.route, d.model, d.probability, d.category, d.prompt, o.model, o.status, "
               "o.cost_usd, o.latency_s, o.response, f.quality, o.calls FROM decisions d "
               "LEFT JOIN outcomes o ON o.decision_id = d.decision_id "
               f"LEFT JOIN ({labels}) q ON q.decision_id = d.decision_id AND q.answer = '' "
               f"LEFT JOIN feedback f ON f.seq = q.seq WHERE {where} ORDER BY d.created_s, d.decision_id")
        yield from self._db.stream(sql, [*label_params, *params], chunk_rows)

    def logged_shadow_answers(self, *, route: str | None = None, since_s: float | None = None,
                              until_s: float | None = None, quality_from: str = "any", team: str | None = None,
                              chunk_rows: int = TRAFFIC_CHUNK_ROWS) -> Iterator[list[tuple]]:
        """The shadow answers (status ok) of the decisions :meth:`logged_answers` reads, with their labels.

        Yields chunks of tuples ``(decision_id, model, cost_usd, latency_s, response, quality)``,
        ``quality`` from the first feedback naming that model (picked as in :meth:`logged_answers`).
        """
        self.flush()
        labels, label_params = _label_sql(quality_from)
        where, params = decision_window(route, since_s, until_s, team)
        sql = ("SELECT s.decision_id, s.model, s.cost_usd, s.latency_s, s.response, f.quality FROM shadow_outcomes s "
               "JOIN decisions d ON d.decision_id = s.decision_id "
               f"LEFT JOIN ({labels}) q ON q.decision_id = s.decision_id AND q.answer = s.model "
               f"LEFT JOIN feedback f ON f.seq = q.seq WHERE s.status = 'ok' AND {where} "
               "ORDER BY d.created_s, d.decision_id, s.model")
        yield from self._db.stream(sql, [*label_params, *params], chunk_rows)

    # -- learner state (synchronous) -----------------------------------------------------
    def save_learner_state(self, key: str, state: dict, cursor: int) -> None:
        """Keep a learner's state (JSON) and the feedback cursor it has seen up to; replaces the old one."""
        self._db.execute(
            "INSERT INTO learner_state (key, state, cursor, saved_s) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = excluded.state, cursor = excluded.cursor, "
            "saved_s = excluded.saved_s",
            (key, _dumps(state), int(cursor), time.time()),
        )

    def load_learner_state(self, key: str) -> tuple[dict, int] | None:
        """The state saved under ``key`` and its cursor, or ``None``."""
        rows = self._db.execute("SELECT state, cursor FROM learner_state WHERE key = ?", (key,))
        return (json.loads(rows[0][0]), int(rows[0][1])) if rows else None

    # -- housekeeping --------------------------------------------------------------------
    def reader(self) -> Store:
        """This store reading through a second connection, opened on first use: for long reads (a report over a
        million decisions streams for 20 s), so that writes, feedback and the readiness probe never wait for them.

        It shares this store's queue and writer, so its reads see what was recorded here (``flush`` waits for the
        same rows); one reader serves every caller, so long reads through it run one after the other.  An in-memory
        SQLite store has no second connection to its data and is its own reader.  Closing this store closes it.
        """
        with self._reader_lock:
            if self._reader is None:
                db = self._db.reader()
                if db is self._db:
                    self._reader = self
                else:
                    self._reader = copy.copy(self)  # the same queue, writer and locks, another connection
                    self._reader._db, self._reader._reads_for = db, self
                    self._reader._reader = self._reader
            return self._reader

    def counts(self) -> dict[str, int]:
        """Rows per table (after the queue is written)."""
        self.flush()
        return {table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}")[0][0]) for table in TABLES}

    def close(self) -> None:
        """Write what is queued, stop the writer and close the connections; safe to call twice."""
        if self._reads_for is not None:  # a reader closes with its store
            return
        with self._put_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        if self._writer_db is not self._db:
            self._writer_db.close()
        with self._reader_lock:
            if self._reader is not None and self._reader is not self:
                self._reader._db.close()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _known(self, decision_id: str) -> bool:
        return bool(self._db.execute("SELECT 1 FROM decisions WHERE decision_id = ?", (decision_id,)))

    def _put(self, item: tuple[str, tuple]) -> None:
        with self._put_lock:
            if self._closed:
                raise CrossroadsError("the store is closed; open a new one to record more")
            with self._queued_lock:
                self._queued[item[1][0]] = self._queued.get(item[1][0], 0) + 1
            self._queue.put(item)

    def _write_loop(self) -> None:
        """The writer thread: commit whatever is queued in one transaction, then wake waiting flushes."""
        while True:
            waiting = self._spool is not None and not self._spool.empty
            try:
                batch = [self._queue.get(timeout=REPLAY_INTERVAL_S if waiting else None)]
            except queue.Empty:
                self._replay()
                continue
            while len(batch) < WRITER_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [item for item in batch if isinstance(item, tuple)]
            if rows:
                self._write(rows)
                with self._queued_lock:
                    for _, params in rows:
                        if (left := self._queued.pop(params[0]) - 1) > 0:
                            self._queued[params[0]] = left
            for item in batch:
                if callable(item):  # when_written's callbacks: everything queued before them is written
                    item()
            if any(item is _STOP for item in batch):
                if self._spool is not None and not self._spool.empty:  # one last try; else the next start replays
                    self._replayed_s = 0.0
                    self._replay()
                return

    def _write(self, rows: list[tuple[str, tuple]]) -> None:
        """Commit ``rows`` together; if that fails, one by one, dropping (and logging) the ones that fail.

        With a spool, rows the database cannot take now (see ``sql.unavailable``) go to the spool instead,
        and while it holds rows new ones queue behind them there, so that they are written in order.
        """
        if self._spool is not None and not self._spool.empty:
            self._spool.append([(_SPOOL_KIND[sql], params) for sql, params in rows])
            self._replay()
            return
        try:
            with self._writer_db.transaction() as db:
                for sql, group in groupby(rows, key=lambda item: item[0]):
                    db.executemany(sql, [params for _, params in group])
            return
        except Exception as e:  # noqa: BLE001 (the writer thread must outlive any bad row or lost connection)
            if self._spool is not None and unavailable(e):
                self._spool.append([(_SPOOL_KIND[sql], params) for sql, params in rows])
                self._replayed_s = time.monotonic()
                log.warning("store: cannot write (%s); %d rows kept in the spool %s until it can", e, len(rows),
                            self._spool.path)
                return
            log.debug("store: batch of %d rows failed (%s); retrying them one by one", len(rows), e)
        failed = self._write_each(rows)
        if failed:
            log.error("store: dropped %d of %d queued rows; first error: %s", len(failed), len(rows), failed[0])


    def _write_each(self, rows: list[tuple[str, tuple]]) -> list[Exception]:
        """Commit ``rows`` one by one; the errors of the rows that failed for a bad row (the others are spooled)."""
        failed: list[Exception] = []
        for sql, params in rows:
            try:
                with self._writer_db.transaction() as db:
                    db.execute(sql, params)
            except Exception as e:  # noqa: BLE001 (logged by the caller)
                if self._spool is not None and unavailable(e):
                    self._spool.append([(_SPOOL_KIND[sql], params)])
                else:
                    failed.append(e)
        return failed

    def _replay(self) -> None:
        """Write the spooled rows in order, at most once per ``REPLAY_INTERVAL_S``; keep them if the database
        still cannot take them (rows refused as bad are dropped and logged, as when first written)."""
        assert self._spool is not None
        if self._spool.empty or time.monotonic() - self._replayed_s < REPLAY_INTERVAL_S:
            return
        self._replayed_s = time.monotonic()
        rows = [_from_spool(kind, params) for kind, params in self._spool.rows()]
        try:
            with self._writer_db.transaction() as db:
                for start in range(0, len(rows), WRITER_BATCH):
                    for sql, group in groupby(rows[start:start + WRITER_BATCH], key=lambda item: item[0]):
                        db.executemany(sql, [params for _, params in group])
        except Exception as e:  # noqa: BLE001 (the database may still be down: the rows stay)
            if unavailable(e):
                log.debug("store: the spool's %d rows wait for the database (%s)", len(rows), e)
                return
            kept, failed = [], []  # one by one: drop only the bad rows, keep those the database cannot take now
            for sql, params in rows:
                try:
                    with self._writer_db.transaction() as db:
                        db.execute(sql, params)
                except Exception as row_error:  # noqa: BLE001 (logged below)
                    if unavailable(row_error):
                        kept.append((_SPOOL_KIND[sql], params))
                    else:
                        failed.append(row_error)
            if failed:
                log.error("store: dropped %d of %d spooled rows; first error: %s", len(failed), len(rows), failed[0])
            self._spool.replace(kept)
            return
        self._spool.replace([])
        log.warning("store: wrote the %d rows kept in the spool %s during an outage", len(rows), self._spool.path)

    def spool_full(self) -> bool:
        """Whether the spool has reached its bound: the server then refuses new requests until the database is back."""
        return self._spool is not None and self._spool.full

    def spooled_bytes(self) -> int:
        """Bytes of rows waiting in the spool for the database (0 without a spool)."""
        return 0 if self._spool is None else self._spool.size_bytes


def migrate(db: Database) -> int:
    """Apply the missing :data:`MIGRATIONS` in one transaction; the schema version reached.

    Refuses a database whose version is newer than this code knows.
    """
    with db.transaction():
        db.lock(MIGRATION_LOCK_KEY)
        db.execute(
            f"CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_s {db.types['float']})"
        )
        version = int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")[0][0])
        if version > len(MIGRATIONS):
            raise CrossroadsError(
                f"the store {db.label} has schema version {version}, created by a newer crossroads; upgrade "
                f"crossroads to use it (this one knows versions up to {len(MIGRATIONS)})"
            )
        for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
            for sql in steps:
                db.execute(sql.format(**db.types))
            db.execute("INSERT INTO schema_migrations (version, applied_s) VALUES (?, ?)", (number, time.time()))
            log.info("store: applied schema migration %d", number)
    return len(MIGRATIONS)


def decision_window(route: str | None, since_s: float | None, until_s: float | None,
                    team: str | None = None) -> tuple[str, list]:
    """The WHERE clause on decisions ``d`` made in ``[since_s, until_s)`` on ``route`` by a key of ``team`` (None:
    any), and its values."""
    where, params = ["1 = 1"], []
    for clause, value in (("d.route = ?", route), ("d.created_s >= ?", since_s), ("d.created_s < ?", until_s),
                          ("d.team = ?", team)):
        if value is not None:
            where.append(clause)
            params.append(value)
    return " AND ".join(where), params


def _label_sql(quality_from: str) -> tuple[str, list]:
    """A query of the feedback chosen as each answer's label: ``(decision_id, answer, seq)``, and its values.

    ``answer`` is ``''`` for the served answer (feedback ``model`` NULL), else the shadow model judged.
    Only feedback with a quality counts.  ``quality_from``: ``any`` takes the first from users, else the
    first from any source (a judge); ``user`` users' only; any other text that source only.
    """
    users = f"COALESCE(source, '{USER_SOURCE}') = '{USER_SOURCE}'"
    pick, which, params = "MIN(seq)", "source = ?", [quality_from]
    if quality_from == "any":
        pick, which, params = f"COALESCE(MIN(CASE WHEN {users} THEN seq END), MIN(seq))", "1 = 1", []
    elif quality_from == USER_SOURCE:
        which, params = users, []
    return (f"SELECT decision_id, COALESCE(model, '') AS answer, {pick} AS seq FROM feedback "
            f"WHERE quality IS NOT NULL AND {which} GROUP BY decision_id, COALESCE(model, '')"), params


def _prefixed(alias: str, columns: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns.split(", "))


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays in scores or payloads become plain JSON numbers and lists."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _context(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else np.frombuffer(blob, dtype=np.float32).astype(np.float64)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _int(value: int | None) -> int | None:
    return None if value is None else int(value)

