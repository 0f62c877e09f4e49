"""Evaluation metrics for routers: strong/weak (RouteLLM) and any number of models (RouterBench).

Everything here is a pure function of numpy arrays; see ``docs/metrics.md`` for
what each metric means and where it comes from.

Units: strong-model call shares and CPTs are fractions in [0, 1] (0.28 = 28%
strong calls, where RouteLLM prints "28.00%"); qualities are in the dataset's own
units (correctness in [0, 1], or a mean judge score); costs are US$ per query.

Strong/weak metrics come in two flavours:

* the RouteLLM method (:func:`routellm_curve`, ``assume_rising=True``): 11 points
  at the deciles of the router's scores, CPT read with ``np.interp``, which assumes
  quality rises with the strong share.  These are the headline numbers and match
  RouteLLM's ``evals/evaluate.py`` exactly.
* the fine method (:func:`fine_curve`, ``assume_rising=False``): a point at every
  distinct score and CPT = the smallest share at which the curve first reaches the
  target, correct also where the curve falls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.objective.rules import MaxUtility, decide

CPT_FRACTIONS = (0.5, 0.8)
COST_SHARE_FRACTIONS = {"cost_share_at_95": 0.95, "cost_share_at_97": 0.97, "cost_share_at_100": 1.00}


# -- strong / weak ---------------------------------------------------------------
@dataclass(frozen=True)
class StrongWeakCurve:
    """Quality against the share of queries sent to the strong model, sorted by share.

    ``thresholds[k]`` is the win-probability threshold that produced point k
    (``np.inf`` for the never-strong endpoint of the fine curve).
    """

    strong_share: np.ndarray
    quality: np.ndarray
    thresholds: np.ndarray


def routellm_thresholds(scores: np.ndarray, num_results: int = 10) -> np.ndarray:
    """The bin edges of ``pd.qcut(scores, num_results, retbins=True)``, duplicates kept.

    Linear-interpolation quantiles at ``k / num_results``.  Like pandas >= 3, a
    probability that ``k / num_results`` does not represent exactly is rounded up by
    one ulp; pandas < 3 went through ``np.percentile(100 * p)`` instead, which can
    move an edge by one ulp, and so changes a point only when that edge equals a score.
    """
    scores = _scores(scores)
    if int(num_results) != num_results or num_results < 1:
        raise CrossroadsError(f"num_results must be a positive integer, got {num_results!r}")
    num_results = int(num_results)
    probabilities = np.linspace(0.0, 1.0, num_results + 1)
    inexact = num_results * probabilities != np.arange(num_results + 1)
    probabilities[inexact] = np.nextafter(probabilities[inexact], 1.0)
    return np.quantile(scores, probabilities)


def routellm_curve(
    scores: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray, num_results: int = 10
) -> StrongWeakCurve:
    """RouteLLM's evaluation points: one per :func:`routellm_thresholds` edge.

    A query goes to the strong model when its score is >= the edge, except for the
    last edge (the maximum score) where RouteLLM uses > so that the curve reaches
    0% strong calls.  ``scores`` are the router's win probabilities, one per query;
    the quality arrays hold each model's quality on each query.
    """
    scores, strong, weak = _pair_inputs(scores, strong_quality, weak_quality)
    edges = routellm_thresholds(scores, num_results)
    selected = scores[None, :] >= edges[:, None]
    selected[-1] = scores > edges[-1]
    share = selected.mean(axis=1)
    quality = np.where(selected, strong[None, :], weak[None, :]).mean(axis=1)
    order = np.argsort(share, kind="stable")
    return StrongWeakCurve(strong_share=share[order], quality=quality[order], thresholds=edges[order])


def fine_curve(scores: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray) -> StrongWeakCurve:
    """The exact curve: a point at every distinct score, plus the 0% endpoint.

    Point k sends the queries with score >= ``thresholds[k]`` to the strong model.
    Between two points the straight line is achievable too, by sending a random part
    of the queries tied at the next score to the strong model.
    """
    scores, strong, weak = _pair_inputs(scores, strong_quality, weak_quality)
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    gain = np.cumsum((strong - weak)[order])
    # the last query of each group of tied scores closes a point
    last = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    share = np.r_[0.0, (last + 1) / n]
    quality = weak.sum() / n + np.r_[0.0, gain[last]] / n
    thresholds = np.r_[np.inf, sorted_scores[last]]
    return StrongWeakCurve(strong_share=share, quality=quality, thresholds=thresholds)


def apgr(curve: StrongWeakCurve, strong_mean: float, weak_mean: float) -> float:
    """Average performance gap recovered: the normalised area under the curve.

    ``(trapz(quality, share) - weak_area) / (strong_area - weak_area)`` where the
    model areas are the constant means integrated over the same share range, as in
    RouteLLM.  NaN when the two models have the same mean quality.
    """
    share, quality = curve.strong_share, curve.quality
    span = share[-1] - share[0]
    gap = (strong_mean - weak_mean) * span
    if gap == 0:
        return float("nan")
    return float((_trapezoid(quality, share) - weak_mean * span) / gap)


def cpt(
    curve: StrongWeakCurve, fraction: float, strong_mean: float, weak_mean: float, assume_rising: bool
) -> float:
    """Call-performance threshold: the strong share needed to recover ``fraction`` of the gap.

    The target quality is ``weak_mean + fraction * (strong_mean - weak_mean)``.

    ``assume_rising=True`` is RouteLLM's ``np.interp(target, quality, share)``: exact
    when quality rises with the share, arbitrary where the curve falls, and clamped
    to the curve's ends (never NaN).  ``assume_rising=False`` returns the smallest
    share at which the piecewise-linear curve first reaches the target, or NaN if
    it never does.
    """
    target = weak_mean + fraction * (strong_mean - weak_mean)
    if assume_rising:
        return float(np.interp(target, curve.quality, curve.strong_share))
    return first_reach(curve.strong_share, curve.quality, target)


def strong_weak_metrics(
    scores: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray, num_results: int = 10
) -> dict[str, float]:
    """APGR, CPT(50%) and CPT(80%) by the RouteLLM method (headline) and on the fine curve.

    Keys: ``apgr``, ``cpt50``, ``cpt80``, ``apgr_fine``, ``cpt50_fine``, ``cpt80_fine``;
    CPTs are fractions of queries sent to the strong model.
    """
    scores, strong, weak = _pair_inputs(scores, strong_quality, weak_quality)
    strong_mean, weak_mean = float(strong.mean()), float(weak.mean())
    metrics: dict[str, float] = {}
    for suffix, curve, rising in (
        ("", routellm_curve(scores, strong, weak, num_results), True),
        ("_fine", fine_curve(scores, strong, weak), False),
    ):
        metrics[f"apgr{suffix}"] = apgr(curve, strong_mean, weak_mean)
        for fraction in CPT_FRACTIONS:
            key = f"cpt{round(fraction * 100)}{suffix}"
            metrics[key] = cpt(curve, fraction, strong_mean, weak_mean, assume_rising=rising)
    return metrics


# -- any number of models ------------------------------------------------------------
class CostQualityPoints(NamedTuple):
    """Mean cost (US$ per query) and mean quality of some operating points; unpacks as a pair."""

    mean_cost_usd: np.ndarray
    mean_quality: np.ndarray


def willingness_to_pay_grid(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    allowed: np.ndarray | None = None,
    points: int = 200,
) -> np.ndarray:
    """Willingness-to-pay values (quality per US$) sweeping from "best predicted" to "cheapest".

    A query changes its choice only at a trade-off ratio ``dq / dc`` between two of
    its allowed models (the pricier one predicted better).  The grid is 0 (always
    the best prediction), values in between, and twice the largest ratio (always the
    cheapest model).  With fewer than ``points - 1`` distinct ratios it holds one
    value between each pair of consecutive ratios, so the sweep finds every
    reachable operating point; otherwise ``points - 2`` log-quantiles of the ratios.
    """
    if int(points) != points or points < 3:
        raise CrossroadsError(f"points must be an integer >= 3, got {points!r}")
    points = int(points)
    quality = np.asarray(predicted_quality, dtype=np.float64)
    if quality.ndim != 2:
        raise CrossroadsError(f"predicted quality must have shape (n_queries, n_models), got {quality.shape}")
    n, m = quality.shape
    cost = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), (n, m))
    mask = np.ones((n, m), dtype=bool) if allowed is None else np.broadcast_to(np.asarray(allowed, dtype=bool), (n, m))
    ratios = []
    rows_per_chunk = max(1, 1_000_000 // max(1, m * m))
    for start in range(0, n, rows_per_chunk):
        q, c, ok = (a[start : start + rows_per_chunk] for a in (quality, cost, mask))
        dq = q[:, :, None] - q[:, None, :]
        dc = c[:, :, None] - c[:, None, :]
        useful = (dq > 0) & (dc > 0) & ok[:, :, None] & ok[:, None, :]
        ratios.append(dq[useful] / dc[useful])
    ratio = np.concatenate(ratios) if ratios else np.zeros(0)
    ratio = ratio[np.isfinite(ratio)]
    if ratio.size == 0:
        return np.zeros(1)
    distinct = np.unique(ratio)
    if len(distinct) <= points - 2:
        inner = np.sqrt(distinct[:-1] * distinct[1:])
    else:
        inner = np.exp(np.quantile(np.log(ratio), np.linspace(0.0, 1.0, points - 2)))
    return np.unique(np.r_[0.0, inner, 2.0 * distinct[-1]])


def cost_quality_points(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    true_quality: np.ndarray,
    true_cost_usd: np.ndarray,
    lambdas: np.ndarray | None = None,
    *,
    allowed: np.ndarray | None = None,
    max_cost_usd: float | None = None,
) -> CostQualityPoints:
    """Replay the :class:`~crossroads.objective.rules.MaxUtility` rule at each willingness to pay.

    For every value of ``lambdas`` (default :func:`willingness_to_pay_grid`), each
    query gets the model maximising ``predicted - lambda * expected cost``, and the
    point is the mean true cost and mean true quality of those choices.  Points are
    in ``lambdas`` order.

    Missing outcomes: the router never picks a model whose true quality or cost is
    NaN (it is removed from that query's ``allowed`` set), because the replay
    cannot score it.  This flatters a router slightly; use complete rows
    (``RoutingDataset.complete_rows()``) for headline numbers.
    """
    predicted, expected, true_q, true_c, available = _replay_inputs(
        predicted_quality, expected_cost_usd, true_quality, true_cost_usd, allowed
    )
    if lambdas is None:
        lambdas = willingness_to_pay_grid(predicted, expected, available)
    lambdas = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    rows = np.arange(len(predicted))
    mean_cost = np.empty(len(lambdas))
    mean_quality = np.empty(len(lambdas))
    for k, wtp in enumerate(lambdas):
        chosen = decide(predicted, expected, MaxUtility(wtp), allowed=available, max_cost_usd=max_cost_usd).chosen
        mean_cost[k] = true_c[rows, chosen].mean()
        mean_quality[k] = true_q[rows, chosen].mean()
    return CostQualityPoints(mean_cost, mean_quality)


def single_model_points(true_quality: np.ndarray, true_cost_usd: np.ndarray) -> CostQualityPoints:
    """Each model's mean cost and mean quality (over the queries where its outcome is recorded)."""
    quality, cost = _outcomes(true_quality, true_cost_usd)
    recorded = ~(np.isnan(quality) | np.isnan(cost))
    if not recorded.any(axis=0).all():
        raise CrossroadsError("some model has no recorded outcome at all; drop it from the pool")
    count = recorded.sum(axis=0)
    return CostQualityPoints(
        np.where(recorded, cost, 0.0).sum(axis=0) / count, np.where(recorded, quality, 0.0).sum(axis=0) / count
    )


def oracle_choice(true_quality: np.ndarray, true_cost_usd: np.ndarray) -> np.ndarray:
    """Per query, the cheapest model among those with the best true quality (column order on ties)."""
    quality, cost = _outcomes(true_quality, true_cost_usd)
    recorded = ~(np.isnan(quality) | np.isnan(cost))
    _require_rows(recorded)
    best = np.where(recorded, quality, -np.inf).max(axis=1, keepdims=True)
    tied = recorded & (quality == best)
    return np.argmin(np.where(tied, cost, np.inf), axis=1)


def oracle_point(true_quality: np.ndarray, true_cost_usd: np.ndarray) -> tuple[float, float]:
    """Mean cost and mean quality of :func:`oracle_choice`."""
    quality, cost = _outcomes(true_quality, true_cost_usd)
    chosen = oracle_choice(quality, cost)
    rows = np.arange(len(quality))
    return float(cost[rows, chosen].mean()), float(quality[rows, chosen].mean())


def oracle_curve(
    true_quality: np.ndarray, true_cost_usd: np.ndarray, lambdas: np.ndarray | None = None
) -> CostQualityPoints:
    """The willingness-to-pay sweep of a router that knows the true quality and cost."""
    quality, cost = _outcomes(true_quality, true_cost_usd)
    return cost_quality_points(np.nan_to_num(quality), np.nan_to_num(cost), quality, cost, lambdas)


def non_decreasing_hull(costs: np.ndarray, qualities: np.ndarray) -> CostQualityPoints:
    """Vertices of the non-decreasing convex hull of (cost, quality) points, by cost.

    The upper concave hull (any point on a chord is reachable by randomising between
    its two ends) cut at its highest point: beyond it, paying more buys nothing, so
    the curve stays flat (RouterBench's extrapolation).
    """
    cost, quality = _points(costs, qualities)
    order = np.lexsort((-quality, cost))
    cost, quality = cost[order], quality[order]
    first_of_cost = np.r_[True, cost[1:] != cost[:-1]]
    cost, quality = cost[first_of_cost], quality[first_of_cost]
    hull: list[int] = []
    for k in range(len(cost)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b when it lies on or below the chord from a to k
            if (quality[b] - quality[a]) * (cost[k] - cost[a]) <= (quality[k] - quality[a]) * (cost[b] - cost[a]):
                hull.pop()
            else:
                break
        hull.append(k)
    vertices = np.asarray(hull)
    top = int(np.argmax(quality[vertices]))
    vertices = vertices[: top + 1]
    return CostQualityPoints(cost[vertices], quality[vertices])


def aiq(costs: np.ndarray, qualities: np.ndarray, cost_range: tuple[float, float]) -> float:
    """RouterBench's average improvement in quality over ``cost_range = (low, high)`` US$.

    ``1 / (high - low) * integral from low to high of the non-decreasing hull``.
    The hull is flat to the right of its highest point and counts as 0 below the
    router's cheapest point (RouterBench's ``evaluation/AIQ.py`` integrates from the
    router's cheapest point).  :func:`multi_model_metrics` uses the cheapest and most
    expensive single model of the pool as the range, so AIQs are comparable across
    routers on the same pool.
    """
    low, high = (float(v) for v in cost_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise CrossroadsError(f"cost_range must be two finite costs (low, high) with high > low, got {cost_range!r}")
    hull_cost, hull_quality = non_decreasing_hull(costs, qualities)
    start = max(low, float(hull_cost[0]))
    if start >= high:
        return 0.0
    inside = hull_cost[(hull_cost > start) & (hull_cost < high)]
    x = np.r_[start, inside, high]
    return _trapezoid(np.interp(x, hull_cost, hull_quality), x) / (high - low)


def best_quality(qualities: np.ndarray) -> float:
    """The highest mean quality among the operating points."""
    return float(np.max(np.asarray(qualities, dtype=np.float64)))


def cost_share_at(
    costs: np.ndarray,
    qualities: np.ndarray,
    best_single_cost: float,
    best_single_quality: float,
    fraction: float,
) -> float:
    """Cheapest mean cost reaching ``fraction * best_single_quality``, over ``best_single_cost``.

    The router's points are joined by straight lines in order of cost (a mix of two
    adjacent willingness-to-pay values reaches any point between them); the cost is
    where that line first reaches the target.  NaN when it never does.
    """
    cost, quality = _points(costs, qualities)
    if not best_single_cost > 0:
        raise CrossroadsError(f"the best single model's mean cost must be > 0 US$, got {best_single_cost}")
    order = np.lexsort((-quality, cost))
    return first_reach(cost[order], quality[order], fraction * best_single_quality) / float(best_single_cost)


def multi_model_metrics(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    true_quality: np.ndarray,
    true_cost_usd: np.ndarray,
    lambdas: np.ndarray | None = None,
) -> dict[str, float | np.ndarray]:
    """AIQ, best quality and cost shares of a router's willingness-to-pay sweep.

    The reference is the pool's single models: AIQ is taken between the cheapest
    and the most expensive model's mean cost (NaN if all cost the same), and
    ``cost_share_at_95/97/100`` are relative to the model with the best mean
    quality (the cheaper on ties; NaN if that model is free).  Also returns the
    curve as ``mean_cost_usd`` and ``mean_quality`` (in ``lambdas`` order).
    """
    curve = cost_quality_points(predicted_quality, expected_cost_usd, true_quality, true_cost_usd, lambdas)
    single_cost, single_quality = single_model_points(true_quality, true_cost_usd)
    best = int(np.lexsort((single_cost, -single_quality))[0])
    low, high = float(single_cost.min()), float(single_cost.max())
    metrics: dict[str, float | np.ndarray] = {
        "aiq": aiq(curve.mean_cost_usd, curve.mean_quality, (low, high)) if high > low else float("nan"),
        "best_quality": best_quality(curve.mean_quality),
    }
    for key, fraction in COST_SHARE_FRACTIONS.items():
        metrics[key] = (
            cost_share_at(
                curve.mean_cost_usd, curve.mean_quality, float(single_cost[best]), float(single_quality[best]), fraction
            )
            if single_cost[best] > 0
            else float("nan")  # a free best model: no cost to share
        )
    metrics["mean_cost_usd"] = curve.mean_cost_usd
    metrics["mean_quality"] = curve.mean_quality
    return metrics


# -- shared helpers -----------------------------------------------------------------
def first_reach(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """Smallest x where the polyline through ``(x[k], y[k])`` (x sorted) first reaches ``target``.

    NaN when it never does.  A point within 1e-12 (relative) of the target counts as
    reaching it, so that a curve ending exactly at the target is not missed by rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    reached = (y >= target) | np.isclose(y, target, rtol=1e-12, atol=1e-15)
    if not reached.any():
        return float("nan")
    k = int(np.argmax(reached))
    if k == 0 or y[k] <= y[k - 1]:
        return float(x[k])
    part = min(1.0, max(0.0, (target - y[k - 1]) / (y[k] - y[k - 1])))
    return float(x[k - 1] + part * (x[k] - x[k - 1]))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """``np.trapz(y, x)`` (renamed ``np.trapezoid`` in numpy 2), same summation order."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def _scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size == 0:
        raise CrossroadsError(f"scores must be a non-empty 1-D array (one per query), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise CrossroadsError("scores contain NaN or infinity: the router produced no score for some queries")
    return scores


def _pair_inputs(
    scores: np.ndarray, strong_quality: np.ndarray, weak_quality: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = _scores(scores)
    strong = np.asarray(strong_quality, dtype=np.float64)
    weak = np.asarray(weak_quality, dtype=np.float64)
    if strong.shape != scores.shape or weak.shape != scores.shape:
        raise CrossroadsError(
            f"need one score and one quality per query for both models: scores {scores.shape}, "
            f"strong quality {strong.shape}, weak quality {weak.shape}"
        )
    if not (np.isfinite(strong).all() and np.isfinite(weak).all()):
        raise CrossroadsError(
            "strong/weak quality contains NaN: evaluate on the queries where both models have an outcome "
            "(RoutingDataset.complete_rows())"
        )
    return scores, strong, weak


def _points(costs: np.ndarray, qualities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cost = np.asarray(costs, dtype=np.float64).ravel()
    quality = np.asarray(qualities, dtype=np.float64).ravel()
    if cost.shape != quality.shape or cost.size == 0:
        raise CrossroadsError(f"need as many costs as qualities (at least one), got {cost.size} and {quality.size}")
    if not (np.isfinite(cost).all() and np.isfinite(quality).all()):
        raise CrossroadsError("cost/quality points contain NaN or infinity")
    return cost, quality


def _outcomes(true_quality: np.ndarray, true_cost_usd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    quality = np.asarray(true_quality, dtype=np.float64)
    cost = np.asarray(true_cost_usd, dtype=np.float64)
    if quality.ndim != 2 or cost.shape != quality.shape:
        raise CrossroadsError(
            "true quality and true cost must both have shape (n_queries, n_models), "
            f"got {quality.shape} and {cost.shape}"
        )
    return quality, cost


def _require_rows(recorded: np.ndarray) -> None:
    empty = ~recorded.any(axis=1)
    if empty.any():
        raise CrossroadsError(
            f"{int(empty.sum())} queries have no recorded outcome for any model "
            f"(first: query {int(np.argmax(empty))}); "
            "drop them before evaluating"
        )


def _replay_inputs(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    true_quality: np.ndarray,
    true_cost_usd: np.ndarray,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    true_q, true_c = _outcomes(true_quality, true_cost_usd)
    predicted = np.asarray(predicted_quality, dtype=np.float64)
    if predicted.shape != true_q.shape:
        raise CrossroadsError(
            f"predicted quality {predicted.shape} and true quality {true_q.shape} must have the same shape"
        )
    n, m = true_q.shape
    available = ~(np.isnan(true_q) | np.isnan(true_c))
    if allowed is not None:
        mask = np.asarray(allowed)
        if mask.dtype != bool or mask.shape not in ((m,), (n, m)):
            raise CrossroadsError(f"allowed must be a boolean mask of shape ({m},) or ({n}, {m})")
        available = available & mask
    _require_rows(available)
    expected = np.asarray(expected_cost_usd, dtype=np.float64)
    if expected.shape not in ((m,), (n, m)):
        raise CrossroadsError(f"expected cost must have shape ({m},) or ({n}, {m}), got {expected.shape}")
    # predictions of models that cannot be picked are never looked at
    predicted = np.where(available, predicted, 0.0)
    expected = np.where(available, expected, 0.0)
    return predicted, expected, true_q, true_c, available
