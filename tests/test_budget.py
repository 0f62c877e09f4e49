"""Budgets that pace: parsing, periods, the pacing controller on synthetic streams, `crossroads simulate --budget`."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from crossroads.errors import CrossroadsError
from crossroads.evaluate.budget_simulation import Traffic, best_fixed_quality, simulate_budget
from crossroads.objective.budget import (
    CAP_HEADROOM,
    Budget,
    PacingController,
    TrafficProfile,
    parse_budget,
    period_bounds,
)


# -- parsing -------------------------------------------------------------------------------
def test_budget_parses_the_short_form_and_the_mapping():
    assert parse_budget("50/day") == Budget(50.0, "day", "pace")
    assert parse_budget("$2.5/Week:cap") == Budget(2.5, "week", "cap")
    assert parse_budget({"usd": 7, "per": "month", "mode": "cap", "floor_model": "small"}) == \
        Budget(7.0, "month", "cap", "small")


@pytest.mark.parametrize("value, message", [
    ("-5/day", "budget usd is -5: a budget cannot be negative or zero"),
    ("0/day", "budget usd is 0: a budget cannot be negative or zero"),
    ("5/fortnight", "'fortnight' is not a budget period; use one of day, week, month"),
    ("5/day:soft", "'soft' is not a budget mode; use pace .* or cap"),
    ("five/day", "'five' is not a number"),
    ("50", "not USD/PERIOD"),
    ({"per": "day"}, "needs `usd`"),
    ({"usd": 5, "period": "day"}, "unknown keys \\['period'\\]"),
    ({"usd": float("nan")}, "usd must be"),
    ({"usd": True}, "usd must be"),
])
def test_budget_errors_say_what_is_wrong(value, message):
    with pytest.raises(CrossroadsError, match=message):
        parse_budget(value)


# -- periods -------------------------------------------------------------------------------
def _utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def test_periods_are_utc_day_iso_week_and_calendar_month():
    now = _utc(2024, 2, 29, 23, 59, 59)  # a Thursday, the last day of a leap February
    assert period_bounds("day", now) == (_utc(2024, 2, 29), _utc(2024, 3, 1))
    assert period_bounds("week", now) == (_utc(2024, 2, 26), _utc(2024, 3, 4))  # Monday to Monday
    assert period_bounds("month", now) == (_utc(2024, 2, 1), _utc(2024, 3, 1))
    assert period_bounds("month", _utc(2024, 12, 31, 12)) == (_utc(2024, 12, 1), _utc(2025, 1, 1))
    assert period_bounds("day", _utc(2024, 3, 1)) == (_utc(2024, 3, 1), _utc(2024, 3, 2))  # the start belongs to it


def test_traffic_profile_mass():
    profile = TrafficProfile([1, 3])
    assert profile.mass(0.0, 0.5) == pytest.approx(0.25)
    assert profile.mass(0.5, 1.0) == pytest.approx(0.75)
    assert profile.cumulative(0.75) == pytest.approx(0.625)
    with pytest.raises(CrossroadsError):
        TrafficProfile([0, 0])


# -- the controller on a synthetic stream ------------------------------------------------------
def _synthetic(n_rows=2000, seed=0):
    """Three models: cheap and weak, mid, dear and strong; quality varies per query."""
    rng = np.random.default_rng(seed)
    hardness = rng.random(n_rows)
    quality = np.clip(np.stack([0.9 - hardness, 0.95 - 0.6 * hardness, 0.98 - 0.2 * hardness], axis=1)
                      + rng.normal(0, 0.05, (n_rows, 3)), 0, 1)
    cost = np.tile([0.0001, 0.001, 0.01], (n_rows, 1)) * rng.uniform(0.8, 1.2, (n_rows, 3))
    predicted = np.clip(quality + rng.normal(0, 0.05, quality.shape), 0, 1)
    return quality, cost, predicted, np.array([0.0001, 0.001, 0.01])


@pytest.mark.parametrize("mode", ["pace", "cap"])
def test_controller_spends_the_budget_and_cap_never_overspends(mode):
    quality, cost, predicted, expected = _synthetic()
    traffic = Traffic(3000)
    budget_usd = 3000 * 0.002  # between all-cheap (0.3) and all-dear (30)
    for seed in range(3):
        run = simulate_budget(quality, cost, predicted, expected, Budget(budget_usd, "day", mode), traffic, seed=seed)
        summary = run.summary
        assert 0.95 <= summary["spend_over_budget"] <= (1.0 if mode == "cap" else 1.05)
        assert run.spent_usd.max() <= budget_usd or mode == "pace"
        controller = PacingController(Budget(budget_usd, "day", mode))
        goal = budget_usd * (1 - (CAP_HEADROOM if mode == "cap" else 0.0))
        course = goal * np.array([controller.course(share) for share in run.target_usd / budget_usd])
        assert np.abs(run.spent_usd - course).max() / budget_usd < 0.05  # the spend follows its course all along
        assert summary["max_deviation"] <= controller.reserve * (1 - controller.release) + 0.05  # below the target
        assert abs(run.spent_usd[-1] - goal) / budget_usd < 0.02  # ... by the reserve, spent by the end
        assert summary["quality_vs_best_fixed"] >= 0.97
        assert summary["refused_share"] == 0.0


def test_the_course_holds_a_reserve_back_until_the_last_of_the_traffic():
    controller = PacingController(Budget(1.0, "day"))
    reserve, release = controller.reserve, controller.release
    assert controller.course(0.0) == 0.0 and controller.course(1.0) == 1.0
    assert controller.course(0.5) == pytest.approx(0.5 * (1 - reserve))
    assert controller.course(1 - release / 2) == pytest.approx((1 - release / 2) * (1 - reserve / 2))
    assert np.all(np.diff([controller.course(share) for share in np.linspace(0, 1, 201)]) > 0)
    assert PacingController(Budget(1.0, "day"), reserve=0.0).course(0.5) == 0.5
    with pytest.raises(CrossroadsError, match="reserve < release"):
        PacingController(Budget(1.0, "day"), reserve=0.4, release=0.3)


def test_controller_tracks_a_uniform_target_on_flat_traffic():
    quality, cost, predicted, expected = _synthetic()
    run = simulate_budget(quality, cost, predicted, expected, Budget(4.0, "day"), Traffic(2000, amplitude=0.0),
                          profile="uniform")
    halfway = np.searchsorted(run.time, 0.5)
    assert run.spent_usd[halfway] == pytest.approx(2.0, rel=0.05)
    assert run.target_usd[halfway] == pytest.approx(2.0, rel=0.01)


def test_controller_is_back_on_track_soon_after_a_burst():
    quality, cost, predicted, expected = _synthetic()
    traffic = Traffic(3000, burst_at=0.4, burst_x=3.0, burst_len=0.05)
    run = simulate_budget(quality, cost, predicted, expected, Budget(6.0, "day"), traffic)
    during = (run.time >= 0.4) & (run.time < 0.45)
    assert during.sum() > 2 * 0.05 * 3000  # the burst happened
    assert run.willingness_to_pay[during].mean() > run.willingness_to_pay[run.time < 0.35].mean()
    assert run.summary["recovery"] <= 0.10


def test_cap_refuses_once_the_budget_is_gone_and_pace_serves_the_cheapest():
    cap = PacingController(Budget(1.0, "day", "cap"))
    quality, cost = np.array([0.5, 0.9]), np.array([0.01, 0.1])
    state = cap.state(quality, cost, now_s=_utc(2024, 1, 1, 12), spent_usd=0.995)
    assert state.exhausted and cap.choose(quality, cost, state) is None
    state = cap.state(quality, cost, now_s=_utc(2024, 1, 1, 12), spent_usd=0.95)  # only the cheap one fits
    assert not state.exhausted and cap.choose(quality, cost, state) == 0
    pace = PacingController(Budget(1.0, "day", "pace"))
    state = pace.state(quality, cost, now_s=_utc(2024, 1, 1, 12), spent_usd=1.2)
    assert state.exhausted and pace.choose(quality, cost, state) == 0


def test_controller_pays_more_when_the_budget_is_ahead_of_the_spend():
    rng = np.random.default_rng(1)
    lambdas = {}
    for spent in (0.0, 0.9):
        controller = PacingController(Budget(1.0, "day"))
        for i in range(200):  # the same requests, the same time: only the spend differs at the end
            quality, cost = rng.random(3), np.array([0.0001, 0.001, 0.01])
            state = controller.state(quality, cost, _utc(2024, 1, 1) + 200 * i, spent if i == 199 else 0.0)
        lambdas[spent] = state.willingness_to_pay
    assert lambdas[0.9] > lambdas[0.0]


def test_more_than_the_band_over_the_target_it_catches_up_faster():
    def last_lambda(spent: float, catch_up: float) -> float:
        rng = np.random.default_rng(2)
        controller = PacingController(Budget(1.0, "day"), catch_up=catch_up)
        for i in range(200):  # until 200 x 200 s = 46% of the day: the target curve stands at 0.46
            quality, cost = rng.random(3), np.array([0.0001, 0.001, 0.01])
            state = controller.state(quality, cost, _utc(2024, 1, 1) + 200 * i, spent if i == 199 else 0.0)
        return state.willingness_to_pay

    within, beyond = 0.46 + 0.02, 0.46 + 0.06  # the band is 3% of the budget
    assert last_lambda(within, catch_up=0.08) == last_lambda(within, catch_up=0.2)  # the usual horizon
    assert last_lambda(beyond, catch_up=0.08) > last_lambda(beyond, catch_up=0.2)  # paid back over 8%, not 20%


def test_best_fixed_quality_interpolates_the_upper_envelope():
    fixed = {"spend_usd": np.array([1.0, 2.0, 3.0, 4.0]), "mean_quality": np.array([0.5, 0.6, 0.9, 0.85])}
    assert best_fixed_quality(fixed, 2.0) == pytest.approx(0.7)  # (1, 0.5)-(3, 0.9) lies above (2, 0.6)
    assert best_fixed_quality(fixed, 4.0) == pytest.approx(0.9)  # money left unspent is allowed
    assert np.isnan(best_fixed_quality(fixed, 0.5))


# -- the CLI -----------------------------------------------------------------------------------
def test_simulate_cli_with_a_budget_writes_the_spend_curve(tmp_path):
    from crossroads.cli.main import main
    from crossroads.data.dataset import ModelInfo, RoutingDataset
    from crossroads.data.jsonl import write_jsonl

    quality, cost, _, _ = _synthetic(400)
    data = RoutingDataset([f"q{i}" for i in range(400)], [f"question {i} " + "x" * (i % 7) for i in range(400)],
                          ["c"] * 400, ["s"] * 400, [ModelInfo("cheap"), ModelInfo("mid"), ModelInfo("dear")],
                          quality.tolist(), cost.tolist())
    path = tmp_path / "data.jsonl"
    write_jsonl(data, path)
    out = tmp_path / "out"
    code = main(["simulate", "--dataset", f"crossroads:{path}", "--budget", "0.4/day:cap", "--queries", "1500",
                 "--burst-at", "0.5", "--router", "knn:k=10", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "budget.json").read_text())
    summary = result["runs"][0]["summary"]
    assert summary["spend_usd"] <= 0.4 and summary["spend_over_budget"] >= 0.9
    assert summary["recovery"] is not None
    assert (out / "budget.png").stat().st_size > 0
