"""The decision log as people browse it: a searchable, paginated list, and one decision in full.

What the dashboard's decisions view reads (:mod:`crossroads.serve.dashboard`).  A search
matches a decision id's start, a route or a model name exactly, or any part of the stored
prompt (case-insensitive); ``team`` limits everything to the decisions of that team's keys.
"""

from __future__ import annotations

import json
from typing import Any

from crossroads.errors import CrossroadsError
from crossroads.store.records import USER_SOURCE, UnknownDecisionError, decision_window

#: Most decisions on one page.
MAX_PER_PAGE = 200
#: Characters of the prompt shown in the list (the whole prompt is in the decision's detail).
PROMPT_PREVIEW_CHARS = 160

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
                     since_s: float | None = None, until_s: float | None = None, page: int = 1,
                     per_page: int = 50) -> dict[str, Any]:
    """One page of the decisions matching ``query`` (newest first), and how many match in all."""
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise CrossroadsError(f"per_page must be 1 to {MAX_PER_PAGE}, got {per_page}")
    if page < 1:
        raise CrossroadsError(f"page must be 1 or more, got {page}")
    store.flush()
    where, params = decision_window(route, since_s, until_s, team)
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where += (" AND (d.decision_id LIKE ? ESCAPE '\\' OR d.route = ? OR d.model = ? OR o.model = ? "
                  "OR LOWER(d.prompt) LIKE ? ESCAPE '\\')")
        params += [escaped + "%", query, query, query, "%" + escaped.lower() + "%"]
    db = store._db
    joined = "FROM decisions d LEFT JOIN outcomes o ON o.decision_id = d.decision_id"
    (total,), = db.execute(f"SELECT COUNT(*) {joined} WHERE {where}", params)
    rows = db.execute(f"SELECT {_LIST_COLUMNS.format(preview=PROMPT_PREVIEW_CHARS)} {joined} WHERE {where} "
                      "ORDER BY d.created_s DESC, d.decision_id LIMIT ? OFFSET ?",
                      [*params, per_page, (page - 1) * per_page])
    return {"total": int(total), "page": page, "per_page": per_page,
            "decisions": [dict(zip(_LIST_FIELDS, row)) for row in rows]}


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
