"""Training targets from logged partial feedback: what each model would have scored on every logged query.

A server's log holds, per query, the outcome of the model its route chose (``served``,
chosen with probability ``propensity``) and, on a small share of queries, shadow outcomes
of other models.  A router fitted on those cells alone learns the logging policy's bias:
a model is seen mostly where the route already sent it.  :func:`debiased` turns the log
into a full-information dataset whose every cell is an unbiased target of that model's
quality on that query (given the prompt), so any router can be fitted on it as on a
benchmark.  The methods:

* ``dr`` (doubly robust, the default): ``y_ij = qhat_ij + 1[j = served_i] (q_ij - qhat_ij) / propensity_i``,
  with ``qhat`` a cross-fitted direct model (below); unbiased when either the propensities
  or ``qhat`` are right.
* ``ips`` (importance weighting): ``y_ij = 1[j = served_i] q_ij / propensity_i``; unbiased, but
  zero on every other cell and up to ``1 / propensity`` on the served one.
* ``dm`` (direct method): the observed cells as they are, ``qhat`` on the others; biased
  where the direct model is wrong.

Shadow outcomes (observed, ``j != served``) are full information and are taken as they
are by every method; a row without a logged propensity gets the direct method.  The
direct model is a ridge regression per model on the embeddings of the queries where
that model was observed, cross-fitted over ``folds`` folds, so that a query's own
outcome never predicts itself (a self-fitted ``qhat`` would cancel the correction).

DR and IPS targets leave [0, 1] (``1 / propensity`` reaches 90 with ``explore: 0.1`` over
9 models).  Routers that average their targets (``knn``, ``ridge`` and ensembles of
them, :data:`UNBOUNDED_ROUTERS`) stay unbiased on them; routers with a bounded loss
(``mlp``, ``mf``, ``irt``, ``sw_ranking``, ``gbt``) need ``clip=True``, which clips to
[0, 1] and so biases a cell's mean towards the middle where its corrections are large.

Measured (``benchmarks/learn_from_logs.py``, results in ``benchmarks/results/learn_from_logs.md``):
the share of a full-information router's reward gain over the best single model that a
``knn`` router retrained from 5,000 logged requests reaches; see :data:`DEFAULT_MAX_WEIGHT`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from crossroads.checks import check_count, check_positive
from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError

METHODS = ("dr", "ips", "dm")
#: The method ``crossroads train`` applies to logged data, with 1 / propensity capped at :data:`DEFAULT_MAX_WEIGHT`.
DEFAULT_METHOD = "dr"
#: Measured (benchmarks/learn_from_logs.py, knn k=100 on 5,000 requests logged with explore 0.1): uncapped DR and
#: IPS targets (1 / propensity up to 90 over 9 models) make neighbour means so noisy that the retrained router
#: loses to the best single model by several times the full-information router's gain; capped at 5 it was the
#: best of dr, ips, dm, a cap of 2 and naive on LLMRouter (-14% of the gain against -441%, -470%, -30%, -27%, -191%;
#: 5 seeds).
DEFAULT_MAX_WEIGHT = 5.0
#: Routers whose fit averages their targets (squared loss or neighbour means), so unbounded targets stay unbiased.
UNBOUNDED_ROUTERS = frozenset({"knn", "ridge"})
#: A model observed on fewer training queries than this gets its mean observed quality as its direct estimate.
MIN_OBSERVED = 10


def accepts_unbounded(router_spec_name: str, members: str | None = None) -> bool:
    """True for routers fitted by averaging (knn, ridge, an ensemble of only those): no clipping needed."""
    if router_spec_name == "ensemble":
        names = [name for name in (members or "knn+ridge").split("+") if name]
        return bool(names) and all(name in UNBOUNDED_ROUTERS for name in names)
    return router_spec_name in UNBOUNDED_ROUTERS


def debiased(dataset: RoutingDataset, embeddings: np.ndarray, *, method: str = DEFAULT_METHOD, folds: int = 5,
             alpha: float = 1.0, clip: bool = False, max_weight: float | None = None,
             seed: int = 0) -> RoutingDataset:
    """``dataset`` (logged, see :attr:`RoutingDataset.logged`) with every quality cell an unbiased target.

    The result is a full-information dataset (``served`` and ``propensity`` None) with the
    same queries, pool and costs.  ``method`` is ``dr``, ``ips`` or ``dm`` (module docstring);
    ``folds`` and ``alpha`` set the cross-fitted ridge direct model; ``clip`` clips targets to
    [0, 1] for routers that need bounded targets; ``max_weight`` caps ``1 / propensity`` (less
    variance, some bias: a capped correction no longer undoes the logging policy in full).
    """
    if not dataset.logged:
        raise CrossroadsError("the dataset holds no logged decisions (served model and propensity): it is full "
                              "information already; train on it as it is")
    if method not in METHODS:
        raise CrossroadsError(f"unknown debiasing method {method!r}: choose one of {', '.join(METHODS)}")
    check_count(folds, "folds", minimum=2)
    check_positive(alpha, "alpha")
    embeddings = np.asarray(embeddings, dtype=np.float64)
    n, m = dataset.n_queries, dataset.n_models
    if embeddings.shape[0] != n:
        raise CrossroadsError(f"{len(embeddings)} embeddings for {n} queries: embed every query of the dataset")
    quality = dataset.quality
    served, propensity = dataset.served, dataset.propensity
    rows = np.arange(n)
    has_served = served >= 0
    served_quality = np.where(has_served, quality[rows, np.maximum(served, 0)], np.nan)
    weighted = has_served & np.isfinite(served_quality) & np.isfinite(propensity) & (propensity > 0)
    if (propensity[weighted] > 1.0).any():
        raise CrossroadsError(f"propensities must be in (0, 1], found {propensity[weighted].max():g}")
    observed = np.isfinite(quality)
    if not observed.any():
        raise CrossroadsError("the logged dataset has no observed outcome (no feedback on any decision): label "
                              "the decisions first (`crossroads label`, or feedback through /v1/feedback)")
    qhat = direct_estimates(quality, embeddings, folds=folds, alpha=alpha, seed=seed)
    shadow = observed.copy()
    shadow[rows[has_served], served[has_served]] = False
    if method == "dm":
        targets = np.where(observed, quality, qhat)
    else:
        targets = np.where(shadow, quality, qhat)
        on = rows[weighted]
        chosen = served[weighted]
        weight = 1.0 / propensity[on]
        if max_weight is not None:
            check_positive(max_weight, "max_weight")
            weight = np.minimum(weight, max_weight)
        if method == "dr":
            targets[on, chosen] = qhat[on, chosen] + (served_quality[on] - qhat[on, chosen]) * weight
        else:  # ips: zero where not chosen, unless a shadow outcome says better
            ips_rows = np.zeros((len(on), m))
            ips_rows[np.arange(len(on)), chosen] = served_quality[on] * weight
            targets[on] = np.where(shadow[on], quality[on], ips_rows)
        unweighted = rows[~weighted]  # no propensity: the direct method on that row
        targets[unweighted] = np.where(observed[unweighted], quality[unweighted], qhat[unweighted])
    if clip:
        targets = np.clip(targets, 0.0, 1.0)
    return replace(dataset, quality=targets, served=None, propensity=None)


def direct_estimates(quality: np.ndarray, embeddings: np.ndarray, *, folds: int = 5, alpha: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """Cross-fitted ridge predictions of every cell, in [0, 1]: each fold predicted from the other folds' observed cells."""
    n, m = quality.shape
    fold = np.random.default_rng(seed).permutation(n) % folds
    x = np.hstack([embeddings, np.ones((n, 1))])
    penalty = alpha * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    observed = np.isfinite(quality)
    values = np.where(observed, quality, 0.0)
    overall = np.nanmean(quality) if observed.any() else 0.5
    out = np.empty((n, m))
    for f in range(folds):
        test, train = fold == f, fold != f
        for j in range(m):
            seen = train & observed[:, j]
            if seen.sum() < MIN_OBSERVED:
                mean = values[seen, j].mean() if seen.any() else overall
                out[test, j] = mean
                continue
            xs = x[seen]
            coef = np.linalg.solve(xs.T @ xs + penalty, xs.T @ values[seen, j])
            out[test, j] = x[test] @ coef
    return np.clip(out, 0.0, 1.0)
