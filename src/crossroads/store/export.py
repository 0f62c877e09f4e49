"""A server's logged traffic as a routing dataset: what ``crossroads logs export`` writes and ``store:URL`` reads.

One query per answered decision that has its prompt stored: the served answer under the model
that gave it (a fallback's when one answered instead of the chosen model), every shadow answer
under its model, and on a cascade route every other answer the chain called (at its own cost),
each with its label (feedback quality) where it has one.  ``served`` is the column
of the model the route chose and ``propensity`` the probability it gave that choice, so that
training and evaluation can weigh the partial feedback (see ``RoutingDataset``).

The store sits above the data layer, so ``store:URL`` specs are resolved here:
:func:`load_datasets` reads them and hands every other spec to ``crossroads.data.importers``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset, combine
from crossroads.errors import CrossroadsError
from crossroads.registry import Spec, bind
from crossroads.store.keys import store_keys
from crossroads.store.records import USER_SOURCE, Store, open_store

#: Where ``quality_from`` may point, besides a named source such as ``judge:gpt-4o``.
QUALITY_FROM = ("any", USER_SOURCE)
#: The outcome status of a decision no model answered (every model failed).
FAILED = "failed"


@dataclass
class LogExport:
    """A logged dataset and what reading it counted."""

    dataset: RoutingDataset
    decisions: int  # in the window, before anything was skipped
    without_prompt: int  # skipped: stored without their prompt (serve ran without store_prompts: true)
    failed: int  # skipped: no answer (every model failed, or never carried out)
    labelled: int  # queries whose served answer has a quality
    shadow: int  # shadow answers kept
    shadow_labelled: int  # shadow answers with a quality
    cascade: int = 0  # answers a cascade called but did not return

    @property
    def summary(self) -> str:
        """What was read, in one line for people."""
        return (f"{self.dataset.n_queries:,} queries ({self.labelled:,} with quality), {self.shadow:,} shadow "
                f"outcomes ({self.shadow_labelled:,} with quality), "
                + (f"{self.cascade:,} other answers of cascades, " if self.cascade else "")
                + f"{self.dataset.n_models} models; skipped "
                f"{self.without_prompt:,} decisions without a prompt and {self.failed:,} failed")


def read_logs(store: Store, *, route: str | None = None, since_s: float | None = None,
              until_s: float | None = None, quality_from: str = "any", team: str | None = None) -> LogExport:
    """The decisions made in ``[since_s, until_s)`` (on ``route``, with ``team``'s keys) as a logged dataset, with
    counts: a team's own traffic, to train its own router.

    ``quality_from``: ``any`` (users' first label, else the first from any other source, such
    as ``judge:<model>``), ``user`` (users' only) or one source's name.  Raises
    :class:`CrossroadsError` for an unknown route, or when no decision can become a query.
    """
    if not isinstance(quality_from, str) or not quality_from.strip():
        raise CrossroadsError(f"quality_from {quality_from!r} is empty: give any, user or a feedback source "
                              "such as judge:gpt-4o")
    if route is not None:
        known = store.routes()
        if route not in known:
            raise CrossroadsError(f"unknown route {route!r}: the store has decisions of "
                                  f"{', '.join(map(repr, known)) if known else 'no route yet'}")
    if team is not None:
        teams = [entry["name"] for entry in store_keys(store).teams()]
        if team not in teams:
            raise CrossroadsError(f"unknown team {team!r}: the store has "
                                  f"{'teams ' + ', '.join(map(repr, teams)) if teams else 'no team yet'}")
    window = {"route": route, "since_s": since_s, "until_s": until_s, "quality_from": quality_from, "team": team}
    ids, prompts, categories, sources, chosen, propensity = [], [], [], [], [], []
    cells: list[tuple[int, str, float | None, float | None, float | None, str | None]] = []
    row_of: dict[str, int] = {}
    decisions = without_prompt = failed = labelled = cascade = 0
    for rows in store.logged_answers(**window):
        for decision_id, route_name, model, probability, category, prompt, answered, status, cost_usd, latency_s, \
                response, quality, calls in rows:
            decisions += 1
            if prompt is None:
                without_prompt += 1
                continue
            if answered is None or status == FAILED:
                failed += 1
                continue
            row_of[decision_id] = len(ids)
            ids.append(decision_id)
            prompts.append(prompt)
            categories.append(category or "")
            sources.append(f"logs/{route_name}")
            chosen.append(model)
            propensity.append(_propensity(probability))
            others = []
            if calls is not None:  # a cascade: the outcome's cost is the chain's; each answer has its own
                chain = [call for call in json.loads(calls) if call.get("status") == "ok"]
                served = next((call for call in chain if call["model"] == answered), {})
                cost_usd, latency_s = served.get("cost_usd", cost_usd), served.get("latency_s", latency_s)
                others = [(row_of[decision_id], call["model"], None, call.get("cost_usd"), call.get("latency_s"),
                           call.get("text")) for call in chain if call is not served]
            cells.append((row_of[decision_id], answered, quality, cost_usd, latency_s, response))
            cells += others
            cascade += len(others)
            labelled += quality is not None
    _check_some(decisions, without_prompt, window)
    shadow = shadow_labelled = 0
    for rows in store.logged_shadow_answers(**window):
        for decision_id, model, cost_usd, latency_s, response, quality in rows:
            row = row_of.get(decision_id)
            if row is None:  # its decision was skipped
                continue
            cells.append((row, model, quality, cost_usd, latency_s, response))
            shadow += 1
            shadow_labelled += quality is not None
    dataset = _dataset(store, ids, prompts, categories, sources, chosen, propensity, cells)
    return LogExport(dataset, decisions, without_prompt, failed, labelled, shadow, shadow_labelled, cascade)


def logged_dataset(store: Store, *, route: str | None = None, since_s: float | None = None,
                   until_s: float | None = None, quality_from: str = "any", team: str | None = None) -> RoutingDataset:
    """The logged dataset of :func:`read_logs`, without its counts."""
    return read_logs(store, route=route, since_s=since_s, until_s=until_s, quality_from=quality_from,
                     team=team).dataset


def load_store(url: str, *, route: str | None = None, since_s: float | None = None, until_s: float | None = None,
               quality_from: str = "any", team: str | None = None) -> RoutingDataset:
    """The logged dataset of the store at ``url`` (the ``store:URL[,route=R,team=T,...]`` dataset format)."""
    check_store_exists(url)
    with open_store(url) as store:
        return logged_dataset(store, route=route, since_s=since_s, until_s=until_s, quality_from=quality_from,
                              team=team)


def load_dataset(spec: str, *, progress: bool = False) -> RoutingDataset:
    """``crossroads.data.importers.load_dataset``, and
    ``store:URL[,route=R,since_s=T,until_s=T,quality_from=Q,team=T]``."""
    from crossroads.data.importers import STORE_FORMAT
    from crossroads.data.importers import load_dataset as load_file

    parsed = Spec.parse(spec, "dataset")
    if parsed.name != STORE_FORMAT[0]:
        return load_file(spec, progress=progress)
    if parsed.positional is None and "url" not in parsed.params:
        raise CrossroadsError(f"dataset {spec!r} names no store: write store:URL, e.g. store:sqlite://crossroads.db "
                              "or store:postgresql://user@host:5432/db")
    return load_store(**bind(load_store, parsed, f"dataset format {STORE_FORMAT[0]!r}"))


def load_datasets(specs: list[str], *, progress: bool = False) -> RoutingDataset:
    """Several datasets (``store:`` ones included) combined into one, as ``crossroads.data.importers.load_datasets``."""
    return combine([load_dataset(spec, progress=progress) for spec in specs])


def check_store_exists(url: str) -> None:
    """Refuse a SQLite store file that does not exist (opening it would create an empty one)."""
    from pathlib import Path

    from crossroads.store.sql import parse_store_url

    kind, where = parse_store_url(url)
    if kind == "sqlite" and where != ":memory:" and not Path(where).is_file():
        raise CrossroadsError(f"no store at {Path(where).resolve()}: give the `store:` URL the server was run "
                              "with (a config-less `crossroads serve` writes sqlite://crossroads.db in its working "
                              "directory)")


def _propensity(probability: float | None) -> float:
    """A logged probability as a propensity: NaN when not logged or not in (0, 1] (rounding above 1 is 1)."""
    if probability is None:
        return math.nan
    probability = float(probability)
    if 1.0 < probability <= 1.0 + 1e-9:
        return 1.0
    return probability if 0.0 < probability <= 1.0 else math.nan


def _check_some(decisions: int, without_prompt: int, window: dict) -> None:
    where = ", ".join(f"{key.removesuffix('_s')} {value}" for key, value in window.items()
                      if value is not None and key != "quality_from")
    if decisions == 0:
        raise CrossroadsError(f"the store holds no decisions{' (' + where + ')' if where else ''}: nothing to export")
    if without_prompt == decisions:
        raise CrossroadsError(f"none of the {decisions:,} decisions has its prompt stored, so they cannot become a "
                              "dataset: set `store_prompts: true` in the server's config and serve again")


def _dataset(store: Store, ids: list[str], prompts: list[str], categories: list[str], sources: list[str],
             chosen: list[str], propensity: list[float], cells: list[tuple]) -> RoutingDataset:
    if not ids:
        raise CrossroadsError("no decision in the store was answered (every one failed): nothing to export")
    names = sorted(set(chosen) | {cell[1] for cell in cells})
    column = {name: j for j, name in enumerate(names)}
    prices = store.pool()
    shape = (len(ids), len(names))
    quality, cost, latency = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    responses: list[list[str | None]] = [[None] * len(names) for _ in ids]
    any_response = False
    for row, model, label, cost_usd, latency_s, response in cells:
        j = column[model]
        for array, value in ((quality, label), (cost, cost_usd), (latency, latency_s)):
            if value is not None:
                array[row, j] = value
        if response is not None:
            responses[row][j] = response
            any_response = True
    return RoutingDataset(
        query_ids=ids, prompts=prompts, categories=categories, sources=sources,
        models=[ModelInfo(name, *prices.get(name, (None, None))) for name in names],
        quality=quality, cost_usd=cost, latency_s=latency, responses=responses if any_response else None,
        cost_estimated=[False] * len(names),
        served=np.array([column[name] for name in chosen], dtype=np.int64),
        propensity=np.array(propensity, dtype=np.float64),
    )
