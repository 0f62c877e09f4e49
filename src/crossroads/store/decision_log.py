"""The decision log as people browse it: a searchable, paginated list, and one decision in full.

What the dashboard's decisions view reads (:mod:`crossroads.serve.dashboard`).  A search
matches a decision id's start, a route or a model name exactly, or any part of the stored
prompt (case-insensitive); ``team`` limits everything to the decisions of that team's keys.
Pages follow a cursor (the last row's time and id), so the millionth row costs what the first does.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.store.records import USER_SOURCE, UnknownDecisionError, decision_window

#: Most decisions on one page.
MAX_PER_PAGE = 200
#: Characters of the prompt shown in the list (the whole prompt is in the decision's detail).
PROMPT_PREVIEW_CHARS = 160
#: A search counts its matches up to this many and then says "more" (``total_capped``): a common word matches most
#: of the store, and counting every match of it took 1.65 s at a million decisions, on every page.
SEARCH_COUNT_CAP = 10_000

_LIST_COLUMNS = (
    "d.decision_id, d.created_s, d.route, d.model, o.model, o.status, o.cost_usd, o.latency_s, o.tokens_in, "
    "o.tokens_out, o.fallbacks, d.probability, d.key_id, d.team, d.category, SUBSTR(d.prompt, 1, {preview}), "
    "(SELECT f.quality FROM feedback f WHERE f.decision_id = d.decision_id AND f.model IS NULL AND "
    f"COALESCE(f.source, '{USER_SOURCE}') = '{USER_SOURCE}' ORDER BY f.seq LIMIT 1)"
)
_LIST_FIELDS = ("decision_id", "created_s", "route", "chosen", "model", "status", "cost_usd", "latency_s",
                "tokens_in", "tokens_out", "fallbacks", "probability", "key_id", "team", "category", "prompt",
                "quality")


def search_decisions(store: Any, *, query: str | None = None, route: str | None = None, team: str | None = None,
                     since_s: float | None = None, until_s: float | None = None, cursor: str | None = None,
                     page: int = 1, per_page: int = 50) -> dict[str, Any]:
    """One page of the decisions matching ``query`` (newest first, ties by id), how many match in all (a search's
    count stops at :data:`SEARCH_COUNT_CAP`: ``total_capped``), and ``next``, the cursor of the page after (None on
    the last page).

    Pass ``cursor`` (a page's ``next``) to read on from where that page ended, through the index at any depth;
    ``page`` skips ``(page - 1) * per_page`` rows instead, reading each row it skips (1.35 s at page 20,000 of a
    million decisions), and stays for links that use it.
    """
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise CrossroadsError(f"per_page must be 1 to {MAX_PER_PAGE}, got {per_page}")
    if page < 1:
        raise CrossroadsError(f"page must be 1 or more, got {page}")
    if cursor is not None and page != 1:
        raise CrossroadsError("give a cursor or a page number, not both")
    store.flush()
    where, params = decision_window(route, since_s, until_s, team)
    joined = "FROM decisions d LEFT JOIN outcomes o ON o.decision_id = d.decision_id"
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where += (" AND (d.decision_id LIKE ? ESCAPE '\\' OR d.route = ? OR d.model = ? OR o.model = ? "
                  "OR LOWER(d.prompt) LIKE ? ESCAPE '\\')")
        params += [escaped + "%", query, query, query, "%" + escaped.lower() + "%"]
    page_where, page_params, offset = where, list(params), (page - 1) * per_page
    if cursor is not None:
        created_s, decision_id = _position(cursor)
        page_where += " AND d.created_s <= ? AND (d.created_s < ? OR d.decision_id > ?)"  # the first term: the index
        page_params += [created_s, created_s, decision_id]
    db = store._db
    rows = db.execute(f"SELECT {_LIST_COLUMNS.format(preview=PROMPT_PREVIEW_CHARS)} {joined} WHERE {page_where} "
                      "ORDER BY d.created_s DESC, d.decision_id LIMIT ? OFFSET ?",
                      [*page_params, per_page + 1, offset])  # one more than shown: whether a next page exists
    more, rows = len(rows) > per_page, rows[:per_page]
    if cursor is None and not more and (rows or offset == 0):
        total, capped = offset + len(rows), False  # this page holds the last match: no need to count them
    else:
        total, capped = _count(db, joined if query else "FROM decisions d", where, params,
                               SEARCH_COUNT_CAP if query else None)
    decisions = [dict(zip(_LIST_FIELDS, row)) for row in rows]
    last = decisions[-1] if more else None
    return {"total": total, "total_capped": capped, "page": None if cursor is not None else page,
            "per_page": per_page, "decisions": decisions,
            "next": None if last is None else _cursor(last["created_s"], last["decision_id"])}


def _count(db: Any, source: str, where: str, params: list, cap: int | None) -> tuple[int, bool]:
    """How many rows of ``source`` match ``where``, up to ``cap`` (None: all); and whether there are more."""
    if cap is None:
        (total,), = db.execute(f"SELECT COUNT(*) {source} WHERE {where}", params)
        return int(total), False
    (total,), = db.execute(f"SELECT COUNT(*) FROM (SELECT 1 {source} WHERE {where} LIMIT ?) matched", [*params, cap + 1])
    return min(int(total), cap), int(total) > cap


def _cursor(created_s: float, decision_id: str) -> str:
    """The cursor of the page after the row ``(created_s, decision_id)``: opaque to clients, safe in a URL."""
    return base64.urlsafe_b64encode(json.dumps([created_s, decision_id]).encode()).decode().rstrip("=")


def _position(cursor: str) -> tuple[float, str]:
    try:
        created_s, decision_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return float(created_s), str(decision_id)
    except (ValueError, TypeError):  # bad base64 or JSON, or not a pair
        raise CrossroadsError(f"cursor {cursor[:60]!r} is not one this server gave: pass a page's `next`") from None


def decision_detail(store: Any, decision_id: str, team: str | None = None) -> dict[str, Any]:
    """A decision with its candidates, scores, probability, outcome, shadow outcomes and every feedback.

    Raises :class:`UnknownDecisionError` for an id the store lacks, or one of another team when ``team`` is given.
    """
    decision = store.decision(decision_id)
    if decision is None or (team is not None and decision["team"] != team):
        raise UnknownDecisionError(decision_id)
    decision.pop("context", None)
    db = store._db
    decision["feedback"] = [
        {"seq": int(seq), "reward": reward, "quality": quality, "payload": None if payload is None else
         json.loads(payload), "created_s": created_s, "source": source or USER_SOURCE, "model": model}
        for seq, reward, quality, payload, created_s, source, model in db.execute(
            "SELECT seq, reward, quality, payload, created_s, source, model FROM feedback WHERE decision_id = ? "
            "ORDER BY seq", (decision_id,))]
    decision["shadow_outcomes"] = [
        dict(zip(("model", "status", "cost_usd", "latency_s", "tokens_in", "tokens_out", "error", "response"), row))
        for row in db.execute("SELECT model, status, cost_usd, latency_s, tokens_in, tokens_out, error, response "
                              "FROM shadow_outcomes WHERE decision_id = ? ORDER BY model", (decision_id,))]
    return decision
