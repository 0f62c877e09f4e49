"""The routing dataset: queries x models, one recorded outcome per cell.

Outcome arrays are ``(n_queries, n_models)`` float64 with NaN where a cell is
missing (a missing outcome is missing, never a zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from crossroads.errors import CrossroadsError, UnknownModelError


@dataclass(frozen=True)
class ModelInfo:
    """One LLM of the pool and its prices in US$ per million tokens (None when unknown)."""

    name: str
    price_per_mtok_in: float | None = None
    price_per_mtok_out: float | None = None
    description: str = ""


@dataclass
class RoutingDataset:
    """Recorded outcomes of a pool of models on a set of queries.

    ``prompts`` hold the text a router looks at (the question itself, without
    few-shot preambles); ``full_prompts`` the text as it was sent to the models
    when that differs (None otherwise).  ``cost_estimated[j]`` is True when model
    j's costs were estimated from prices and token counts rather than recorded.

    Datasets read from a server's logs (``crossroads logs export``) hold partial
    feedback: ``served[i]`` is the column of the model the logging policy chose for
    query i (-1 where unknown) and ``propensity[i]`` the probability it gave that
    choice (NaN where not logged).  An outcome observed for any other model of that
    query is a shadow outcome (a model also called in the background, on a share of
    requests drawn independently of the prompt).  Both are None for datasets where
    every outcome was recorded on purpose (benchmarks).
    """

    query_ids: list[str]
    prompts: list[str]
    categories: list[str]
    sources: list[str]
    models: list[ModelInfo]
    quality: np.ndarray
    cost_usd: np.ndarray
    latency_s: np.ndarray | None = None
    responses: list[list[str | None]] | None = None
    full_prompts: list[str | None] | None = None
    cost_estimated: list[bool] = field(default_factory=list)
    served: np.ndarray | None = None
    propensity: np.ndarray | None = None

    def __post_init__(self) -> None:
        n, m = len(self.query_ids), len(self.models)
        if (self.served is None) != (self.propensity is None):
            raise CrossroadsError("a logged dataset needs both served and propensity (or neither)")
        if self.served is not None:
            self.served = np.asarray(self.served, dtype=np.int64).reshape(n)
            self.propensity = np.asarray(self.propensity, dtype=np.float64).reshape(n)
            if ((self.served < -1) | (self.served >= m)).any():
                raise CrossroadsError(f"served holds model columns outside 0..{m - 1} (or -1 for unknown)")
        self.quality = np.asarray(self.quality, dtype=np.float64).reshape(n, m)
        self.cost_usd = np.asarray(self.cost_usd, dtype=np.float64).reshape(n, m)
        if self.latency_s is not None:
            self.latency_s = np.asarray(self.latency_s, dtype=np.float64).reshape(n, m)
        if not self.cost_estimated:
            self.cost_estimated = [False] * m
        for name, column in (("prompts", self.prompts), ("categories", self.categories), ("sources", self.sources)):
            if len(column) != n:
                raise CrossroadsError(f"dataset has {n} query ids but {len(column)} {name}")
        if len(set(self.model_names)) != m:
            raise CrossroadsError(f"duplicate model names in pool: {self.model_names}")

    @property
    def logged(self) -> bool:
        """True for partial feedback read from a server's logs (see ``served`` and ``propensity``)."""
        return self.served is not None

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def __len__(self) -> int:
        return self.n_queries

    def model_index(self, name: str) -> int:
        """Column of ``name``; raises UnknownModelError listing the pool."""
        try:
            return self.model_names.index(name)
        except ValueError:
            raise UnknownModelError(name, self.model_names) from None

    def subset(self, rows: Sequence[int] | np.ndarray) -> RoutingDataset:
        """The queries at ``rows`` (indices or a boolean mask), same pool."""
        rows = np.arange(self.n_queries)[np.asarray(rows)] if len(rows) else np.zeros(0, dtype=int)
        pick = lambda column: [column[i] for i in rows]  # noqa: E731
        return replace(
            self,
            query_ids=pick(self.query_ids),
            prompts=pick(self.prompts),
            categories=pick(self.categories),
            sources=pick(self.sources),
            quality=self.quality[rows],
            cost_usd=self.cost_usd[rows],
            latency_s=None if self.latency_s is None else self.latency_s[rows],
            responses=None if self.responses is None else pick(self.responses),
            full_prompts=None if self.full_prompts is None else pick(self.full_prompts),
            served=None if self.served is None else self.served[rows],
            propensity=None if self.propensity is None else self.propensity[rows],
        )

    def select_models(self, names: Sequence[str]) -> RoutingDataset:
        """The same queries restricted to the models ``names``, in that order."""
        cols = [self.model_index(name) for name in names]
        served = None
        if self.served is not None:
            new_column = {old: new for new, old in enumerate(cols)}
            served = np.array([new_column.get(int(j), -1) for j in self.served], dtype=np.int64)
        return replace(
            self,
            served=served,
            models=[self.models[j] for j in cols],
            quality=self.quality[:, cols],
            cost_usd=self.cost_usd[:, cols],
            latency_s=None if self.latency_s is None else self.latency_s[:, cols],
            responses=None if self.responses is None else [[row[j] for j in cols] for row in self.responses],
            cost_estimated=[self.cost_estimated[j] for j in cols],
        )

    def complete_rows(self) -> RoutingDataset:
        """Only the queries whose quality is recorded for every model of the pool."""
        return self.subset(~np.isnan(self.quality).any(axis=1))


def combine(datasets: Sequence[RoutingDataset]) -> RoutingDataset:
    """One dataset holding the queries of all ``datasets``.

    The pool is the union of the pools (first-seen order); a model absent from one
    part has missing outcomes (NaN) on that part's queries.  Query ids must be unique
    across parts.
    """
    if not datasets:
        raise CrossroadsError("no dataset given: pass at least one --dataset FORMAT:PATH")
    if len(datasets) == 1:
        return datasets[0]
    if any(part.logged for part in datasets):
        raise CrossroadsError("a dataset read from logs (partial feedback) cannot be combined with others: "
                              "train or evaluate on it alone")
    models: dict[str, ModelInfo] = {}
    estimated: dict[str, bool] = {}
    for part in datasets:
        for model, est in zip(part.models, part.cost_estimated):
            models.setdefault(model.name, model)
            estimated[model.name] = estimated.get(model.name, False) or est
    names = list(models)
    n = sum(part.n_queries for part in datasets)
    quality = np.full((n, len(names)), np.nan)
    cost = np.full((n, len(names)), np.nan)
    has_latency = any(part.latency_s is not None for part in datasets)
    has_responses = any(part.responses is not None for part in datasets)
    has_full = any(part.full_prompts is not None for part in datasets)
    latency = np.full((n, len(names)), np.nan) if has_latency else None
    responses: list[list[str | None]] | None = [] if has_responses else None
    full_prompts: list[str | None] | None = [] if has_full else None
    ids: list[str] = []
    prompts: list[str] = []
    categories: list[str] = []
    sources: list[str] = []
    start = 0
    for part in datasets:
        cols = [names.index(name) for name in part.model_names]
        stop = start + part.n_queries
        quality[start:stop, cols] = part.quality
        cost[start:stop, cols] = part.cost_usd
        if latency is not None and part.latency_s is not None:
            latency[start:stop, cols] = part.latency_s
        if responses is not None:
            for i in range(part.n_queries):
                row: list[str | None] = [None] * len(names)
                if part.responses is not None:
                    for j, col in enumerate(cols):
                        row[col] = part.responses[i][j]
                responses.append(row)
        if full_prompts is not None:
            full_prompts.extend(part.full_prompts or [None] * part.n_queries)
        ids.extend(part.query_ids)
        prompts.extend(part.prompts)
        categories.extend(part.categories)
        sources.extend(part.sources)
        start = stop
    if len(set(ids)) != len(ids):
        raise CrossroadsError("the combined datasets share query ids; give each a distinct source")
    return RoutingDataset(
        query_ids=ids,
        prompts=prompts,
        categories=categories,
        sources=sources,
        models=[models[name] for name in names],
        quality=quality,
        cost_usd=cost,
        latency_s=latency,
        responses=responses,
        full_prompts=full_prompts,
        cost_estimated=[estimated[name] for name in names],
    )
