"""``crossroads report``: what a server's routing did, from the decisions, outcomes and feedback it stored.

:func:`build_report` gives plain JSON values: the window read, the pool's prices, totals
and breakdowns (per model, route, category and day: requests, errors, fallbacks, spend,
tokens, latency percentiles; per virtual key and team the same but latency; over time), the savings
against always sending every request to each single model (the dearest headlined), and the quality served and each single model's
off-policy quality, each with a 95% interval (:mod:`crossroads.evaluate.traffic_estimates`),
and what shadow calls (other models answering in the background, never returned) cost.
:func:`write_report` writes ``report.json``, the PNGs and ``report.html`` (one file, the
plots embedded, readable offline).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.evaluate.traffic import STATUSES, Traffic, load_traffic
from crossroads.evaluate.traffic_estimates import REPLICATES, served_quality, single_model_quality, spend_if_always
from crossroads.store.keys import store_keys

#: Latency percentiles reported.
PERCENTILES = (50, 95, 99)
#: Breakdowns read from the traffic: their name and the Traffic column that groups them ("day" groups by created_s).
TRAFFIC_BREAKDOWNS = ("model", "route", "category", "day")
#: The steps a timeline may take (seconds): the smallest that fits the window in ``TIMELINE_BUCKETS`` steps.
TIMELINE_STEPS_S = (1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
TIMELINE_BUCKETS = 200
#: Every breakdown: also by virtual key and team (read from the store, without latency percentiles).
BREAKDOWNS = (*TRAFFIC_BREAKDOWNS, "key", "team")


def build_report(store: Any, *, route: str | None = None, since_s: float | None = None,
                 until_s: float | None = None, team: str | None = None, replicates: int = REPLICATES,
                 seed: int = 0) -> dict[str, Any]:
    """The report of ``store``'s decisions in ``[since_s, until_s)`` (on ``route``, by ``team``'s keys), as JSON
    values."""
    window = {"route": route, "since_s": since_s, "until_s": until_s, "team": team}
    pool = store.pool()
    traffic = load_traffic(store.traffic(**window), pool)
    if not len(traffic):
        routes = store.routes()
        where = (f" on route {route!r}" if route else "") + (f" by team {team!r}" if team else "")
        raise CrossroadsError(f"the store holds no decision{where} in the window asked for; its routes: "
                              f"{', '.join(routes) or 'none (nothing was ever routed through it)'}")
    savings = spend_if_always(traffic, pool, replicates, seed)
    headline = max(savings["models"], key=lambda m: savings["models"][m]["spend_usd"].value or 0.0, default=None)
    shadow = store.shadow_spend(**window)
    return {
        "window": {**window, "decisions": len(traffic),
                   "first_s": float(traffic.created_s.min()), "last_s": float(traffic.created_s.max())},
        "pool": {model: {"price_per_mtok_in": price[0], "price_per_mtok_out": price[1]}
                 for model, price in pool.items()},
        "totals": _group_rows(traffic, np.zeros(len(traffic), dtype=np.int64), ["all"])[0],
        "breakdown": {**{by: breakdown(traffic, by) for by in TRAFFIC_BREAKDOWNS},
                      **{by: store_keys(store).usage_by(by, **window) for by in ("key", "team")}},
        "model_by_day": model_by_day(traffic),
        "timeline": timeline(traffic),
        "savings": {"decisions": savings["decisions"], "served_usd": savings["served_usd"], "dearest": headline,
                    "models": {m: {"spend_usd": v["spend_usd"].to_dict(), "savings": v["savings"].to_dict(),
                                   "answers_seen": v["answers_seen"]} for m, v in savings["models"].items()}},
        "quality": {"served": served_quality(traffic, replicates, seed).to_dict(),
                    "single_models": {m: {k: e.to_dict() for k, e in estimates.items()}
                                      for m, estimates in single_model_quality(traffic, replicates, seed).items()}},
        "shadow_spend_usd": {"total": sum(entry["spend_usd"] for entry in shadow.values()),
                             "models": {model: entry["spend_usd"] for model, entry in shadow.items()}},
        "shadow_calls": {"total": sum(entry["calls"] for entry in shadow.values()),
                         "errors": sum(entry["errors"] for entry in shadow.values()),
                         "models": {model: entry["calls"] for model, entry in shadow.items()}},
        "replicates": replicates,
    }


def breakdown(traffic: Traffic, by: str) -> list[dict[str, Any]]:
    """One row per model (that answered, else was chosen), route, category or UTC day, most requests first."""
    if by == "day":
        keys, groups = np.unique((traffic.created_s // 86400).astype(np.int64), return_inverse=True)
        return _group_rows(traffic, groups, [_day(key) for key in keys])
    if by == "model":
        codes, names = np.where(traffic.model >= 0, traffic.model, traffic.chosen), traffic.model_names
    elif by in ("route", "category"):
        codes, names = getattr(traffic, by), getattr(traffic, f"{by}_names")
    else:
        raise CrossroadsError(f"unknown breakdown {by!r}; one of {', '.join(BREAKDOWNS)}")
    rows = _group_rows(traffic, codes, names)
    return sorted((row for row in rows if row["requests"]), key=lambda row: -row["requests"])


def model_by_day(traffic: Traffic) -> dict[str, dict[str, int]]:
    """Requests per UTC day and model (that answered, else was chosen): each model's share of traffic over time."""
    days = (traffic.created_s // 86400).astype(np.int64)
    keys, day = np.unique(days, return_inverse=True)
    models = np.where(traffic.model >= 0, traffic.model, traffic.chosen)
    n_models = len(traffic.model_names)
    counts = np.bincount(day * n_models + models, minlength=len(keys) * n_models).reshape(len(keys), n_models)
    return {_day(key): {name: int(count) for name, count in zip(traffic.model_names, row) if count}
            for key, row in zip(keys, counts)}


def timeline(traffic: Traffic, buckets: int = TIMELINE_BUCKETS) -> dict[str, Any]:
    """The traffic over time in at most ``buckets`` equal steps (one of ``TIMELINE_STEPS_S``): each step's requests,
    errors, fallbacks, spend, latency percentiles and requests per model (that answered, else was chosen)."""
    first, last = float(traffic.created_s.min()), float(traffic.created_s.max())
    step_s = next((step for step in TIMELINE_STEPS_S if (last - first) / step < buckets), TIMELINE_STEPS_S[-1])
    start = first // step_s * step_s
    step = ((traffic.created_s - start) // step_s).astype(np.int64)
    n_steps = int(step.max()) + 1
    rows = _group_rows(traffic, step, [str(k) for k in range(n_steps)])
    models = np.where(traffic.model >= 0, traffic.model, traffic.chosen)
    n_models = len(traffic.model_names)
    counts = np.bincount(step * n_models + models, minlength=n_steps * n_models).reshape(n_steps, n_models)
    series = {field: [row[field] for row in rows] for field in
              ("requests", "errors", "fallbacks", "spend_usd", *(f"latency_p{p}_s" for p in PERCENTILES))}
    return {"step_s": step_s, "start_s": [start + k * step_s for k in range(n_steps)], **series,
            "models": {name: counts[:, k].tolist() for k, name in enumerate(traffic.model_names) if counts[:, k].any()}}


def _day(days_since_epoch: int) -> str:
    return dt.datetime.fromtimestamp(int(days_since_epoch) * 86400, dt.timezone.utc).date().isoformat()


def _group_rows(traffic: Traffic, groups: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    size = len(names)
    ok = traffic.status == STATUSES.index("ok")

    def total(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        keep = np.isfinite(values) if mask is None else np.isfinite(values) & mask
        return np.bincount(groups[keep], weights=values[keep], minlength=size)

    requests = np.bincount(groups, minlength=size)
    errors = np.bincount(groups[~ok & (traffic.status >= 0)], minlength=size)  # no outcome: decided, never called
    fallbacks = np.bincount(groups[traffic.fallbacks > 0], minlength=size)
    spend, tokens_in, tokens_out = total(traffic.cost_usd), total(traffic.tokens_in), total(traffic.tokens_out)
    timed = ok & np.isfinite(traffic.latency_s)
    order = np.lexsort((traffic.latency_s[timed], groups[timed]))
    latencies, latency_groups = traffic.latency_s[timed][order], groups[timed][order]
    bounds = np.searchsorted(latency_groups, np.arange(size + 1))
    rows = []
    for k, name in enumerate(names):
        mine = latencies[bounds[k]:bounds[k + 1]]
        rows.append({
            "name": name, "requests": int(requests[k]), "share": float(requests[k] / max(len(traffic), 1)),
            "errors": int(errors[k]), "fallbacks": int(fallbacks[k]), "spend_usd": float(spend[k]),
            "tokens_in": int(tokens_in[k]), "tokens_out": int(tokens_out[k]),
            **{f"latency_p{p}_s": float(np.percentile(mine, p)) if mine.size else None for p in PERCENTILES},
        })
    return rows


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, the plots and ``report.html`` into ``out_dir``; their paths by name."""
    from crossroads.evaluate.report_html import render_html
    from crossroads.evaluate.report_plots import plot_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json"}
    paths["json"].write_text(json.dumps(report, indent=1), encoding="utf-8")
    paths.update(plot_report(report, out))
    paths["html"] = out / "report.html"
    paths["html"].write_text(render_html(report, {k: v for k, v in paths.items() if v.suffix == ".png"}),
                             encoding="utf-8")
    return paths
