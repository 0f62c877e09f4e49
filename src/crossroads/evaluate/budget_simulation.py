"""Replay recorded outcomes as one budget period of traffic, paced by a :class:`PacingController`.

The stream: ``requests`` queries drawn (with replacement, seeded) from the dataset's rows,
arriving over one period at a day/night rate ``1 - amplitude * cos(2 pi * cycles * t)``
(``t`` the fraction of the period; lowest at midnight, highest at noon, ``cycles`` = days
in the period) times ``burst_x`` during ``[burst_at, burst_at + burst_len)``.  ``requests``
is the expected count without the burst; the burst adds its extra requests on top.

Each request is routed by ``predicted_quality - lambda * expected_cost_usd`` among the models
with a recorded outcome, lambda set by the controller from the spend so far (actual recorded
costs); it earns the recorded quality of the model served (0 when cap mode refuses).  The
controller's traffic profile is ``learned`` from the arrivals of a previous period of the
same pattern without the burst (24 bins a day) or ``uniform`` (spend even in time).

Against it: every fixed lambda of :data:`LAMBDA_GRID` on the same stream, and the best of
them in hindsight at the controller's spend (the upper envelope of their (spend, quality)
points, interpolated linearly: a mix of two fixed settings).

``recovery`` after a burst: the first time from the burst's end at which the spend is back
within ``tolerance`` (share of the budget) of the target curve (the budget times the
profile's share of the period so far), as a share of the period; 0 when it never left it,
NaN when it never came back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.objective.budget import LAMBDA_GRID, Budget, PacingController, TrafficProfile

PERIOD_DAYS = {"day": 1, "week": 7, "month": 30}
#: Back on track: the spend within this share of the budget of the target curve.
ON_TRACK_TOLERANCE = 0.02


@dataclass(frozen=True)
class Traffic:
    """The day/night arrival pattern of a simulated period, with an optional burst (see the module's docstring)."""

    requests: int = 5000
    amplitude: float = 0.6  # 0: flat; 0.6: noon's rate is 4x midnight's
    burst_at: float | None = None  # fraction of the period where the burst starts
    burst_x: float = 3.0
    burst_len: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.requests, bool) or not isinstance(self.requests, (int, np.integer)) or self.requests < 1:
            raise CrossroadsError(f"requests must be an integer >= 1, got {self.requests!r}")
        if not 0 <= self.amplitude < 1:
            raise CrossroadsError(f"amplitude must be in [0, 1), got {self.amplitude!r}")
        if self.burst_at is not None:
            if not (0 <= self.burst_at < 1 and 0 < self.burst_len <= 1 - self.burst_at):
                raise CrossroadsError(f"the burst must lie in the period: burst_at in [0, 1), burst_len in "
                                      f"(0, 1 - burst_at], got {self.burst_at!r} and {self.burst_len!r}")
            if not (math.isfinite(self.burst_x) and self.burst_x >= 1):
                raise CrossroadsError(f"burst_x must be a factor >= 1, got {self.burst_x!r}")

    def rate(self, t: np.ndarray, cycles: int, burst: bool = True) -> np.ndarray:
        r = 1.0 - self.amplitude * np.cos(2 * np.pi * cycles * t)
        if burst and self.burst_at is not None:
            r = np.where((t >= self.burst_at) & (t < self.burst_at + self.burst_len), r * self.burst_x, r)
        return r

    def arrivals(self, cycles: int, rng: np.random.Generator, burst: bool = True) -> np.ndarray:
        """Sorted arrival times (fractions of the period) of one period."""
        grid = np.linspace(0.0, 1.0, 20001)
        rate = self.rate(grid[:-1] + 0.5 / 20000, cycles, burst)
        cdf = np.concatenate([[0.0], np.cumsum(rate)])
        n = int(round(self.requests * cdf[-1] / self.rate(grid[:-1] + 0.5 / 20000, cycles, False).sum()))
        return np.sort(np.interp(rng.random(n) * cdf[-1], cdf, grid))


@dataclass
class BudgetRun:
    """One paced period: traces per request, and the summary figures."""

    budget: Budget
    time: np.ndarray  # fraction of the period
    spent_usd: np.ndarray  # cumulative, after each request
    target_usd: np.ndarray  # the target curve at each request
    willingness_to_pay: np.ndarray
    quality: np.ndarray  # recorded quality of what was served (0 refused)
    refused: np.ndarray
    fixed: dict[str, np.ndarray]  # the fixed-lambda sweep: willingness_to_pay, spend_usd, mean_quality
    summary: dict[str, float] = field(default_factory=dict)

    def to_json(self, points: int = 200) -> dict:
        pick = np.unique(np.linspace(0, len(self.time) - 1, min(points, len(self.time))).astype(int))
        return {"budget": {"usd": self.budget.usd, "per": self.budget.per, "mode": self.budget.mode},
                "summary": {k: _json(v) for k, v in self.summary.items()},
                "trace": {"time": self.time[pick].tolist(), "spent_usd": self.spent_usd[pick].tolist(),
                          "target_usd": self.target_usd[pick].tolist(),
                          "willingness_to_pay": self.willingness_to_pay[pick].tolist()},
                "fixed": {k: [_json(x) for x in v] for k, v in self.fixed.items()}}


def simulate_budget(quality: np.ndarray, cost_usd: np.ndarray, predicted_quality: np.ndarray,
                    expected_cost_usd: np.ndarray, budget: Budget, traffic: Traffic, *, seed: int = 0,
                    profile: str = "learned", model_names: list[str] | None = None) -> BudgetRun:
    """Pace ``budget`` over one period of ``traffic`` replaying the rows of ``quality`` / ``cost_usd``.

    ``predicted_quality`` and ``expected_cost_usd`` are what the route knows of each row
    (``(n_rows, n_models)``; the cost may be ``(n_models,)``); NaN recorded outcomes mark
    models unavailable for that row.  ``budget.floor_model`` (in ``model_names``) answers
    once a pace budget is spent.
    """
    quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost_usd, dtype=np.float64)
    predicted = np.asarray(predicted_quality, dtype=np.float64)
    expected = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), quality.shape)
    if predicted.shape != quality.shape or cost.shape != quality.shape:
        raise CrossroadsError("quality, cost_usd and predicted_quality must have one shape (n_rows, n_models)")
    if profile not in ("learned", "uniform"):
        raise CrossroadsError(f"profile must be learned or uniform, got {profile!r}")
    floor = None
    if budget.floor_model is not None:
        if model_names is None or budget.floor_model not in model_names:
            raise CrossroadsError(f"floor model {budget.floor_model!r} is not in the pool {model_names}")
        floor = model_names.index(budget.floor_model)
    cycles = PERIOD_DAYS[budget.per]
    rng = np.random.default_rng(seed)
    times = traffic.arrivals(cycles, rng)
    usable = np.flatnonzero((~np.isnan(quality) & ~np.isnan(cost)).any(axis=1))
    rows = usable[rng.integers(len(usable), size=len(times))]
    shape = None
    if profile == "learned":  # what a previous period without the burst looked like
        shape = TrafficProfile.from_arrivals(traffic.arrivals(cycles, np.random.default_rng([seed, 1]), False),
                                             bins=24 * cycles)
    controller = PacingController(budget, shape)
    period_s = 86400.0 * cycles
    n = len(times)
    spent = np.empty(n)
    target, lam, got, refused = np.empty(n), np.empty(n), np.zeros(n), np.zeros(n, dtype=bool)
    total = 0.0
    for t, (when, row) in enumerate(zip(times, rows)):
        available = np.flatnonzero(~np.isnan(quality[row]) & ~np.isnan(cost[row]))
        state = controller.state(predicted[row, available], expected[row, available], when * period_s, total,
                                 period=(0.0, period_s))
        if state.exhausted and budget.mode == "pace" and floor is not None and floor in available:
            pick = int(np.flatnonzero(available == floor)[0])
        else:
            pick = controller.choose(predicted[row, available], expected[row, available], state)
        if pick is None:
            refused[t] = True
        else:
            j = available[pick]
            total += cost[row, j]
            got[t] = quality[row, j]
            controller.served(expected[row, j], cost[row, j])
        spent[t], target[t], lam[t] = total, state.target_usd, state.willingness_to_pay
    fixed = _fixed_sweep(quality[rows], cost[rows], predicted[rows], expected[rows])
    run = BudgetRun(budget, times, spent, target, lam, got, refused, fixed)
    run.summary = _summary(run, traffic)
    return run


def _fixed_sweep(quality, cost, predicted, expected) -> dict[str, np.ndarray]:
    available = ~np.isnan(quality) & ~np.isnan(cost)
    spend, mean_quality = [], []
    steps = np.arange(len(quality))
    for lam in LAMBDA_GRID:
        value = np.where(available, predicted - lam * expected, -np.inf)
        top = value >= value.max(axis=1, keepdims=True) - 1e-12
        chosen = np.argmin(np.where(top, expected, np.inf), axis=1)
        spend.append(float(cost[steps, chosen].sum()))
        mean_quality.append(float(quality[steps, chosen].mean()))
    return {"willingness_to_pay": LAMBDA_GRID.copy(), "spend_usd": np.array(spend),
            "mean_quality": np.array(mean_quality)}


def best_fixed_quality(fixed: dict[str, np.ndarray], spend_usd: float) -> float:
    """Mean quality of the best mix of two fixed lambdas spending ``spend_usd`` (upper envelope, interpolated).

    Beyond the dearest fixed setting's spend, that setting's quality; below the cheapest's, NaN.
    """
    spend, quality = fixed["spend_usd"], fixed["mean_quality"]
    order = np.lexsort((-quality, spend))
    hull: list[int] = []
    for i in order:  # the upper concave envelope of (spend, quality), by increasing spend
        if hull and spend[i] <= spend[hull[-1]]:
            continue  # same spend, no better quality
        while len(hull) >= 2 and _cross(spend, quality, hull[-2], hull[-1], i) >= 0:
            hull.pop()
        hull.append(i)
    xs, ys = spend[hull], np.maximum.accumulate(quality[hull])  # more money may also go unspent
    if spend_usd < xs[0] - 1e-12:
        return math.nan
    return float(np.interp(spend_usd, xs, ys))


def _cross(x, y, a, b, c) -> float:
    return (x[b] - x[a]) * (y[c] - y[a]) - (y[b] - y[a]) * (x[c] - x[a])


def _summary(run: BudgetRun, traffic: Traffic) -> dict[str, float]:
    budget = run.budget.usd
    spend = float(run.spent_usd[-1]) if len(run.spent_usd) else 0.0
    mean_quality = float(run.quality.mean()) if len(run.quality) else math.nan
    hindsight = best_fixed_quality(run.fixed, spend)
    deviation = np.abs(run.spent_usd - run.target_usd) / budget
    summary = {"requests": float(len(run.time)), "spend_usd": spend, "budget_usd": budget,
               "spend_over_budget": spend / budget, "mean_quality": mean_quality,
               "best_fixed_quality": hindsight,
               "quality_vs_best_fixed": mean_quality / hindsight if hindsight else math.nan,
               "refused_share": float(run.refused.mean()) if len(run.refused) else 0.0,
               "max_deviation": float(deviation.max()) if len(deviation) else 0.0,
               "final_willingness_to_pay": float(run.willingness_to_pay[-1]) if len(run.time) else 0.0}
    if traffic.burst_at is not None:
        end = traffic.burst_at + traffic.burst_len
        after = np.flatnonzero(run.time >= end)
        during = (run.time >= traffic.burst_at) & (run.time < end + 0.1)
        summary["deviation_after_burst"] = float(deviation[during].max()) if during.any() else 0.0
        back = after[deviation[after] <= ON_TRACK_TOLERANCE] if len(after) else after
        summary["recovery"] = float(run.time[back[0]] - end) if len(back) else math.nan
    return summary


def _json(value):
    value = float(value)
    return value if math.isfinite(value) else None


def held_out_predictions(dataset, embeddings: np.ndarray, *, router: str = "knn", test_share: float = 0.5,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train ``router`` on one part of ``dataset`` and predict the other: (test rows, predicted quality, expected cost).

    The expected cost of a model is its mean recorded cost on the training part (what a route
    knows before the request is answered); the stream replays only the test rows.
    """
    from crossroads.routers import make_router

    if not 0 < test_share < 1:
        raise CrossroadsError(f"test_share must be in (0, 1), got {test_share!r}")
    order = np.random.default_rng([seed, 7]).permutation(dataset.n_queries)
    cut = int(round(dataset.n_queries * (1 - test_share)))
    train, test = np.sort(order[:cut]), np.sort(order[cut:])
    fitted = make_router(router).fit(dataset.subset(train), embeddings[train])
    columns = [fitted.models_.index(name) for name in dataset.model_names]
    predicted = fitted.predict(embeddings[test], [dataset.prompts[i] for i in test],
                               [dataset.categories[i] for i in test])[:, columns]
    expected = np.nanmean(dataset.cost_usd[train], axis=0)
    return test, predicted, np.where(np.isnan(expected), np.nanmean(dataset.cost_usd, axis=0), expected)


def plot_budget(run: BudgetRun, path, traffic: Traffic | None = None, title: str = ""):
    """Write the spend against its target over the period (left axis) and the willingness to pay (right, log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crossroads.evaluate.plots import save_figure

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(run.time, run.spent_usd, label="spend (US$)", color="tab:blue")
    ax.plot(run.time, run.target_usd, label="target curve", color="tab:gray", linestyle="--")
    ax.axhline(run.budget.usd, color="tab:red", linewidth=0.8, label=f"budget {run.budget.usd:.4g} US$")
    if traffic is not None and traffic.burst_at is not None:
        ax.axvspan(traffic.burst_at, traffic.burst_at + traffic.burst_len, color="tab:orange", alpha=0.2,
                   label=f"{traffic.burst_x:g}x burst")
    ax.set_xlabel(f"share of the {run.budget.per}")
    ax.set_ylabel("cumulative spend (US$)")
    right = ax.twinx()
    right.plot(run.time, np.maximum(run.willingness_to_pay, 1e-3), color="tab:green", linewidth=0.6, alpha=0.6)
    right.set_yscale("log")
    right.set_ylabel("willingness to pay (quality per US$)", color="tab:green")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or f"{run.budget} paced over one {run.budget.per}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
