"""Evaluation metrics against hand-computed values and independent implementations."""

from __future__ import annotations

import numpy as np
import pytest

from crossroads.errors import CrossroadsError
from crossroads.evaluate.metrics import (
    StrongWeakCurve,
    aiq,
    apgr,
    best_quality,
    cost_quality_points,
    cost_share_at,
    cpt,
    fine_curve,
    first_reach,
    multi_model_metrics,
    non_decreasing_hull,
    oracle_choice,
    oracle_curve,
    oracle_point,
    routellm_curve,
    routellm_thresholds,
    single_model_points,
    strong_weak_metrics,
    willingness_to_pay_grid,
)

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it


# -- RouteLLM's evaluation, written the way RouteLLM writes it (pandas) ----------------------
def routellm_reference(scores, strong, weak, num_results=10):
    """RouteLLM's ``benchmarks.py`` + ``evaluate.py`` on one router: (apgr, cpt50 %, cpt80 %)."""
    pd = pytest.importorskip("pandas")
    data = pd.DataFrame({"strong_win_rates": scores, "strong": strong, "weak": weak})
    _, thresholds = pd.qcut(data["strong_win_rates"], num_results, retbins=True)
    rows = []
    for i, threshold in enumerate(thresholds):
        selection = (
            data["strong_win_rates"] >= threshold if i != len(thresholds) - 1 else data["strong_win_rates"] > threshold
        )
        results = np.where(selection, data["strong"], data["weak"])
        rows.append(
            {"strong_percentage": selection.sum() / len(data) * 100, "accuracy": results.sum() / len(results) * 100}
        )
    curve = pd.DataFrame(rows).sort_values(by=["strong_percentage"])
    weak_accuracy, strong_accuracy = data["weak"].mean() * 100, data["strong"].mean() * 100
    x = curve["strong_percentage"] / 100
    auc = trapezoid(curve["accuracy"], x)
    weak_auc = trapezoid(np.full(len(curve), weak_accuracy), x)
    strong_auc = trapezoid(np.full(len(curve), strong_accuracy), x)
    cpts = [
        np.interp(p * (strong_accuracy - weak_accuracy) + weak_accuracy, curve["accuracy"], curve["strong_percentage"])
        for p in (0.5, 0.8)
    ]
    return (auc - weak_auc) / (strong_auc - weak_auc), cpts[0], cpts[1]


@pytest.mark.parametrize("n", [11, 21, 101, 137, 1000, 1001])
def test_thresholds_are_pandas_qcut_bins(n):
    pd = pytest.importorskip("pandas")
    scores = np.random.default_rng(n).random(n)
    _, bins = pd.qcut(scores, 10, retbins=True)
    ours = routellm_thresholds(scores, 10)
    assert len(ours) == 11
    np.testing.assert_allclose(ours, bins, rtol=1e-15, atol=0)
    if int(pd.__version__.split(".")[0]) >= 3:  # same quantile probabilities as pandas 3
        np.testing.assert_array_equal(ours, bins)


def test_thresholds_keep_duplicate_edges():
    # pandas.qcut raises "Bin edges must be unique" here (duplicates="drop" keeps 4 edges); we keep all 11
    scores = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    edges = routellm_thresholds(scores)
    # positions 0.5 k among the sorted scores: k <= 5 -> 0, k = 7 -> 3.5 -> 0.5, k >= 8 -> 1.  At k = 6
    # the position is exactly 3 (score 0), but 0.6 is rounded up by one ulp as pandas >= 3 does,
    # which puts that edge just above 0: the zeros are no longer sent to the strong model there.
    np.testing.assert_array_equal(edges[:6], 0.0)
    assert 0 < edges[6] < 1e-15
    np.testing.assert_allclose(edges[7:], [0.5, 1, 1, 1])
    pd = pytest.importorskip("pandas")
    np.testing.assert_allclose(np.unique(edges), pd.qcut(scores, 10, retbins=True, duplicates="drop")[1])
    curve = routellm_curve(scores, np.array([1, 1, 1, 1, 0, 0.0]), np.zeros(6))
    # six edges send all 6 queries; edges 6-9 send the two 1.0 scores; the last (> 1) sends none
    np.testing.assert_allclose(curve.strong_share, [0] + [1 / 3] * 4 + [1] * 6)
    np.testing.assert_allclose(curve.quality, [0] + [0] * 4 + [4 / 6] * 6)


@pytest.mark.parametrize("seed", range(5))
def test_strong_weak_metrics_match_routellm_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 2000))
    scores = rng.random(n)
    if seed % 2:  # MMLU/GSM8K: correctness, somewhat predicted by the score
        strong = (rng.random(n) < 0.5 + 0.4 * scores).astype(float)
        weak = (rng.random(n) < 0.6).astype(float)
    else:  # MT-Bench: mean judge score per query
        strong = np.round(rng.uniform(1, 10, n) + 2 * scores, 1)
        weak = np.round(rng.uniform(1, 10, n), 1)
    expected_apgr, expected_cpt50, expected_cpt80 = routellm_reference(scores, strong, weak)
    metrics = strong_weak_metrics(scores, strong, weak)
    assert metrics["apgr"] == pytest.approx(expected_apgr, rel=1e-9, abs=1e-12)
    assert metrics["cpt50"] == pytest.approx(expected_cpt50 / 100, rel=1e-9, abs=1e-12)
    assert metrics["cpt80"] == pytest.approx(expected_cpt80 / 100, rel=1e-9, abs=1e-12)


# -- hand-computed strong/weak examples --------------------------------------------------
SCORES = np.array([0.9, 0.7, 0.5, 0.3])


def test_rising_curve_by_hand():
    # the two best-scored queries gain 1 on the strong model, the others nothing
    strong, weak = np.array([1.0, 1, 0, 0]), np.zeros(4)
    fine = fine_curve(SCORES, strong, weak)
    np.testing.assert_array_equal(fine.strong_share, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(fine.quality, [0, 0.25, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(fine.thresholds, [np.inf, 0.9, 0.7, 0.5, 0.3])
    # area = 0.25 * (0.125 + 0.375 + 0.5 + 0.5) = 0.375; APGR = 0.375 / 0.5
    # CPT50: target 0.25, reached at share 0.25; CPT80: target 0.4 = 0.25 + 0.6 * (0.5 - 0.25)
    expected = {"apgr": 0.75, "cpt50": 0.25, "cpt80": 0.4}
    metrics = strong_weak_metrics(SCORES, strong, weak)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)
        assert metrics[f"{key}_fine"] == pytest.approx(value)


# A curve that rises, falls, then rises again:
# shares 0, 1/4, 1/2, 3/4, 1 -> quality 0.25, 0.5, 0.375, 0.625, 0.75 (all exact in binary)
FALL_STRONG = np.array([1.0, 0.0, 1.0, 1.0])
FALL_WEAK = np.array([0.0, 0.5, 0.0, 0.5])


def test_falling_curve_fine_points_by_hand():
    fine = fine_curve(SCORES, FALL_STRONG, FALL_WEAK)
    np.testing.assert_array_equal(fine.strong_share, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(fine.quality, [0.25, 0.5, 0.375, 0.625, 0.75])


def test_falling_curve_rising_assumption_and_first_crossing_disagree():
    metrics = strong_weak_metrics(SCORES, FALL_STRONG, FALL_WEAK)
    # CPT50 target = 0.25 + 0.5 * (0.75 - 0.25) = 0.5.
    # First crossing: the curve reaches 0.5 already at 25% strong calls.
    assert metrics["cpt50_fine"] == 0.25
    # np.interp(0.5, quality, share) needs a segment with quality[j] <= 0.5 < quality[j + 1]; the only
    # one is 0.375 -> 0.625 (shares 50% -> 75%), so RouteLLM reports 0.5 + 0.125 / 0.25 * 0.25 = 62.5%.
    assert metrics["cpt50"] == 0.625
    routellm = routellm_curve(SCORES, FALL_STRONG, FALL_WEAK)
    assert np.interp(0.5, routellm.quality, routellm.strong_share) == 0.625
    # CPT80 target 0.65 lies only on the last rise (0.625 -> 0.75): both methods give 0.75 + 0.2 * 0.25
    assert metrics["cpt80"] == pytest.approx(0.8)
    assert metrics["cpt80_fine"] == pytest.approx(0.8)
    # area 0.25 * (0.375 + 0.4375 + 0.5 + 0.6875) = 0.5 -> APGR (0.5 - 0.25) / 0.5; the 11 RouteLLM points
    # repeat the same 5 points, so both areas agree
    assert metrics["apgr"] == pytest.approx(0.5)
    assert metrics["apgr_fine"] == pytest.approx(0.5)


def test_routellm_curve_points_by_hand():
    # qcut edges sit at positions 0.3 k among the 4 sorted scores
    curve = routellm_curve(SCORES, FALL_STRONG, FALL_WEAK)
    np.testing.assert_allclose(curve.strong_share, [0] + [0.25] * 3 + [0.5] * 3 + [0.75] * 3 + [1])
    np.testing.assert_allclose(curve.quality, [0.25] + [0.5] * 3 + [0.375] * 3 + [0.625] * 3 + [0.75])
    assert curve.thresholds[0] == 0.9 and curve.thresholds[-1] == 0.3


def test_fine_curve_ties_make_one_point_per_distinct_score():
    scores = np.array([0.2, 0.8, 0.8, 0.5, 0.2])
    strong = np.array([1.0, 1, 0, 1, 1])
    weak = np.array([0.0, 0, 0, 1, 0])
    curve = fine_curve(scores, strong, weak)
    np.testing.assert_array_equal(curve.thresholds, [np.inf, 0.8, 0.5, 0.2])
    np.testing.assert_allclose(curve.strong_share, [0, 0.4, 0.6, 1])
    np.testing.assert_allclose(curve.quality, [0.2, 0.4, 0.4, 0.8])


@pytest.mark.parametrize("seed", range(3))
def test_fine_curve_and_cpt_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    scores = np.round(rng.random(n), 2)  # with ties
    strong = (rng.random(n) < 0.4 + 0.5 * scores).astype(float)
    weak = (rng.random(n) < 0.5).astype(float)
    curve = fine_curve(scores, strong, weak)
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    share = [np.mean(scores >= t) for t in thresholds]
    quality = [np.mean(np.where(scores >= t, strong, weak)) for t in thresholds]
    np.testing.assert_allclose(curve.strong_share, share)
    np.testing.assert_allclose(curve.quality, quality)
    # first crossing, found by scanning the interpolated curve on a dense grid
    grid = np.linspace(0, 1, 200_001)
    values = np.interp(grid, curve.strong_share, curve.quality)
    for fraction in (0.2, 0.5, 0.8):
        target = weak.mean() + fraction * (strong.mean() - weak.mean())
        scanned = grid[np.argmax(values >= target - 1e-12)]
        assert cpt(curve, fraction, strong.mean(), weak.mean(), assume_rising=False) == pytest.approx(scanned, abs=1e-5)
    area = trapezoid(np.interp(grid, curve.strong_share, curve.quality), grid)
    expected = (area - weak.mean()) / (strong.mean() - weak.mean())
    assert apgr(curve, strong.mean(), weak.mean()) == pytest.approx(expected, abs=1e-6)


def test_perfect_scores_give_the_best_curve():
    rng = np.random.default_rng(7)
    strong = (rng.random(500) < 0.7).astype(float)
    weak = (rng.random(500) < 0.5).astype(float)
    gain = strong - weak
    metrics = strong_weak_metrics(gain, strong, weak)
    # sending exactly the queries that gain reaches the strong model's quality at share P(gain == 1)
    assert metrics["cpt80_fine"] <= np.mean(gain == 1) + 1e-12
    assert metrics["apgr_fine"] > 1.0


def test_cpt_nan_when_target_never_reached_and_apgr_nan_without_gap():
    curve = StrongWeakCurve(np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.3, 0.4]), np.array([np.inf, 0.5, 0.1]))
    assert np.isnan(cpt(curve, 1.5, 0.4, 0.2, assume_rising=False))
    assert cpt(curve, 1.5, 0.4, 0.2, assume_rising=True) == 1.0  # np.interp clamps to the last point
    assert np.isnan(apgr(curve, 0.3, 0.3))


def test_first_reach_by_hand():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, 2.0, 1.0, 4.0])
    assert first_reach(x, y, -1.0) == 0.0
    assert first_reach(x, y, 1.0) == 0.5
    assert first_reach(x, y, 3.0) == pytest.approx(2 + 2 / 3)
    assert np.isnan(first_reach(x, y, 4.5))


def test_strong_weak_validation():
    with pytest.raises(CrossroadsError, match="NaN"):
        strong_weak_metrics(SCORES, np.array([1.0, np.nan, 0, 0]), np.zeros(4))
    with pytest.raises(CrossroadsError, match="one score and one quality per query"):
        strong_weak_metrics(SCORES, np.ones(3), np.zeros(4))
    with pytest.raises(CrossroadsError, match="num_results"):
        routellm_thresholds(SCORES, 0)


# -- multi-model: hull, AIQ, cost share -------------------------------------------------
COSTS = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
QUALITIES = np.array([0.5, 0.55, 0.8, 0.7, 0.9, 0.6])


def test_non_decreasing_hull_by_hand():
    # (2, 0.55) is under the chord (1, 0.5)-(3, 0.8); (4, 0.7) under (3, 0.8)-(5, 0.9); (6, 0.6) falls
    hull = non_decreasing_hull(COSTS, QUALITIES)
    np.testing.assert_array_equal(hull.mean_cost_usd, [1, 3, 5])
    np.testing.assert_array_equal(hull.mean_quality, [0.5, 0.8, 0.9])
    single = non_decreasing_hull(np.array([2.0, 1.0]), np.array([0.5, 0.9]))  # cheaper and better
    np.testing.assert_array_equal(single.mean_cost_usd, [1.0])


def test_aiq_by_hand():
    # area on [1, 5]: 2 * (0.5 + 0.8) / 2 + 2 * (0.8 + 0.9) / 2 = 3.0
    assert aiq(COSTS, QUALITIES, (1, 5)) == pytest.approx(3.0 / 4)
    # flat at 0.9 to the right of 5: (3.0 + 0.9) / 6; nothing counted left of the cheapest point
    assert aiq(COSTS, QUALITIES, (0, 6)) == pytest.approx(3.9 / 6)
    # inside: hull(2) = 0.65, hull(4) = 0.85 -> ((0.65 + 0.8) / 2 + (0.8 + 0.85) / 2) / 2
    assert aiq(COSTS, QUALITIES, (2, 4)) == pytest.approx(1.55 / 2)
    with pytest.raises(CrossroadsError, match="high > low"):
        aiq(COSTS, QUALITIES, (3, 3))


def routerbench_aiq(costs, qualities, low, high):
    """Brute force: the hull at x is the best chord (or point) spanning x, kept non-decreasing."""
    xs = np.unique(np.r_[costs, low, high])

    def envelope(x):
        values = [q for c, q in zip(costs, qualities) if c == x]
        for i in range(len(costs)):
            for j in range(len(costs)):
                if costs[i] < x < costs[j]:
                    values.append(np.interp(x, [costs[i], costs[j]], [qualities[i], qualities[j]]))
        return max(values) if values else -np.inf

    xs = xs[xs >= costs.min()]
    curve = np.maximum.accumulate([envelope(x) for x in xs])  # flat beyond the last point too
    keep = (xs >= low) & (xs <= high)
    return trapezoid(curve[keep], xs[keep]) / (high - low)


@pytest.mark.parametrize("seed", range(6))
def test_aiq_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    costs = np.round(rng.random(15), 2) + 0.01
    qualities = rng.random(15)
    # RouterBench's evaluation/AIQ.py: range from 0 to the largest cost among the compared routers
    assert aiq(costs, qualities, (0, 1.5)) == pytest.approx(routerbench_aiq(costs, qualities, 0, 1.5))
    low, high = np.sort(rng.choice(costs, 2, replace=False))
    assert aiq(costs, qualities, (low, high)) == pytest.approx(routerbench_aiq(costs, qualities, low, high))


def test_cost_share_at_by_hand():
    # points joined in cost order; best single model: quality 0.85 at cost 5
    # 100%: 0.85 first reached between (4, 0.7) and (5, 0.9): 4.75 -> 0.95
    assert cost_share_at(COSTS, QUALITIES, 5.0, 0.85, 1.0) == pytest.approx(0.95)
    # 90%: 0.765 between (2, 0.55) and (3, 0.8): 2 + 0.215 / 0.25 = 2.86 -> 0.572
    assert cost_share_at(COSTS, QUALITIES, 5.0, 0.85, 0.9) == pytest.approx(0.572)
    assert np.isnan(cost_share_at(COSTS, QUALITIES, 5.0, 0.95, 1.0))
    assert best_quality(QUALITIES) == 0.9


# -- multi-model: the willingness-to-pay sweep ---------------------------------------------
# 4 queries, a cheap model (US$1) and a dear one (US$3); predictions are the truth
TRUE_QUALITY = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
TRUE_COST = np.array([[1.0, 3.0]] * 4)


def test_sweep_and_metrics_by_hand():
    # only queries 1 and 3 trade quality for cost (ratio 1/2): grid = 0 and 2 x 0.5
    np.testing.assert_array_equal(willingness_to_pay_grid(TRUE_QUALITY, np.array([1.0, 3.0])), [0.0, 1.0])
    points = cost_quality_points(TRUE_QUALITY, np.array([1.0, 3.0]), TRUE_QUALITY, TRUE_COST)
    # wtp 0: dear model on queries 1 and 3, cheap on 0 (tie) and 2 -> cost 2, quality 1; wtp 1: all cheap
    np.testing.assert_array_equal(points.mean_cost_usd, [2.0, 1.0])
    np.testing.assert_array_equal(points.mean_quality, [1.0, 0.5])
    metrics = multi_model_metrics(TRUE_QUALITY, np.array([1.0, 3.0]), TRUE_QUALITY, TRUE_COST)
    # singles: cheap (1, 0.5), dear (3, 0.75). AIQ on [1, 3]: (0.5 + 1) / 2 + 1 = 1.75, / 2
    assert metrics["aiq"] == pytest.approx(0.875)
    assert metrics["best_quality"] == 1.0
    # 95% of 0.75 = 0.7125 reached at 1 + 0.2125 / 0.5 = 1.425 US$, over the dear model's 3 US$
    assert metrics["cost_share_at_95"] == pytest.approx(0.475)
    assert metrics["cost_share_at_97"] == pytest.approx(1.455 / 3)
    assert metrics["cost_share_at_100"] == pytest.approx(0.5)
    np.testing.assert_array_equal(metrics["mean_cost_usd"], [2.0, 1.0])


def test_single_models_and_oracle_by_hand():
    singles = single_model_points(TRUE_QUALITY, TRUE_COST)
    np.testing.assert_array_equal(singles.mean_cost_usd, [1.0, 3.0])
    np.testing.assert_array_equal(singles.mean_quality, [0.5, 0.75])
    assert oracle_choice(TRUE_QUALITY, TRUE_COST).tolist() == [0, 1, 0, 1]
    assert oracle_point(TRUE_QUALITY, TRUE_COST) == (2.0, 1.0)
    curve = oracle_curve(TRUE_QUALITY, TRUE_COST)
    assert (curve.mean_cost_usd[0], curve.mean_quality[0]) == (2.0, 1.0)


def _dense_sweep(predicted, expected, true_q, true_c):
    """Every operating point, from a dense scan of willingness to pay around each trade-off ratio."""
    from crossroads.objective.rules import MaxUtility, decide

    dq = predicted[:, :, None] - predicted[:, None, :]
    dc = expected[:, :, None] - expected[:, None, :]
    ratios = np.unique(dq[(dq > 0) & (dc > 0)] / dc[(dq > 0) & (dc > 0)])
    scan = np.r_[0.0, ratios * (1 - 1e-6), ratios * (1 + 1e-6)]
    rows = np.arange(len(predicted))
    found = set()
    for wtp in scan:
        chosen = decide(predicted, expected, MaxUtility(wtp)).chosen
        found.add((round(true_c[rows, chosen].mean(), 12), round(true_q[rows, chosen].mean(), 12)))
    return found


@pytest.mark.parametrize("seed", range(3))
def test_default_grid_finds_every_operating_point(seed):
    rng = np.random.default_rng(seed)
    n, m = 40, 4
    predicted = rng.integers(0, 6, (n, m)) / 5
    expected = rng.integers(1, 4, (n, m)) / 100
    true_q = (rng.random((n, m)) < predicted).astype(float)
    true_c = expected * rng.uniform(0.8, 1.2, (n, m))
    points = cost_quality_points(predicted, expected, true_q, true_c)
    ours = {(round(c, 12), round(q, 12)) for c, q in zip(*points)}
    assert ours == _dense_sweep(predicted, expected, true_q, true_c)
    # the ends: best prediction (wtp 0) and always the cheapest expected cost
    rows = np.arange(n)
    cheapest = np.lexsort((-predicted.T, expected.T), axis=0)[0]
    assert points.mean_cost_usd[-1] == pytest.approx(true_c[rows, cheapest].mean())


def test_large_pools_get_a_log_quantile_grid():
    rng = np.random.default_rng(0)
    predicted = rng.random((500, 10))
    grid = willingness_to_pay_grid(predicted, np.linspace(0.001, 0.01, 10), points=150)
    assert len(grid) == 150 and grid[0] == 0.0 and np.all(np.diff(grid) > 0)


def test_replay_never_picks_a_missing_outcome():
    true_q = np.array([[0.2, np.nan, 0.9], [0.5, 0.6, np.nan]])
    true_c = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    predicted = np.array([[0.1, 0.9, 0.8], [0.1, 0.2, 0.99]])  # the router would love the missing cells
    points = cost_quality_points(predicted, np.array([1.0, 2.0, 3.0]), true_q, true_c, np.array([0.0]))
    # query 0 -> model 2 (0.9, US$3); query 1 -> model 1 (0.6, US$2)
    assert points.mean_quality[0] == pytest.approx(0.75)
    assert points.mean_cost_usd[0] == pytest.approx(2.5)
    with pytest.raises(CrossroadsError, match="no recorded outcome for any model"):
        cost_quality_points(predicted, np.ones(3), np.full((2, 3), np.nan), true_c, np.array([0.0]))


def test_multi_model_metrics_on_random_pool_are_consistent():
    rng = np.random.default_rng(11)
    n, m = 400, 5
    price = np.array([0.1, 0.3, 1.0, 2.0, 5.0]) * 1e-3
    skill = np.array([0.4, 0.55, 0.65, 0.7, 0.8])
    true_q = (rng.random((n, m)) < skill).astype(float)
    true_c = price * rng.uniform(0.5, 1.5, (n, m))
    metrics = multi_model_metrics(np.broadcast_to(skill, (n, m)), price, true_q, true_c)
    # predictions that ignore the query reach exactly the single models' points
    singles = single_model_points(true_q, true_c)
    points = set(zip(np.round(metrics["mean_cost_usd"], 12), np.round(metrics["mean_quality"], 12)))
    assert points <= set(zip(np.round(singles.mean_cost_usd, 12), np.round(singles.mean_quality, 12)))
    # and so its AIQ is the single models' (RouterBench's zero router)
    cost_range = (singles.mean_cost_usd.min(), singles.mean_cost_usd.max())
    expected = aiq(singles.mean_cost_usd, singles.mean_quality, cost_range)
    assert metrics["aiq"] == pytest.approx(expected)
    oracle = multi_model_metrics(true_q, price, true_q, true_c)
    assert oracle["aiq"] > metrics["aiq"]
    assert oracle["cost_share_at_100"] < 1.0
