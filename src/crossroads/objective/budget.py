"""Budgets that pace: a spend limit per period, and the controller that spends it evenly.

A :class:`Budget` is ``usd`` per ``per`` (a UTC ``day``, ISO ``week`` or calendar ``month``)
in ``mode`` ``pace`` (keep serving, steer the willingness to pay so that the spend follows
the budget over the period; once it is gone, the ``floor_model`` or the cheapest candidate
answers) or ``cap`` (the same pacing, and a hard stop: no request is started whose
expected cost exceeds what is left, and none at all once it is spent).  It does not know
what owns it (a route, a key, a team): the owner reads the period's spend and asks a
:class:`PacingController` for the willingness to pay of each request.

The controller chooses ``lambda`` (quality units per US$, the ``willingness_to_pay`` of
:class:`crossroads.objective.rules.MaxUtility`) so that the spend is back on its course
``horizon`` ahead::

    spend_per_request(lambda) = (budget * course(F(t + horizon)) - spent) / expected_requests(t, t + horizon)

``F(t)`` is the target curve, the profile's share of the period so far; the course keeps a
``reserve`` for bursts below it, a share of what the curve allows that is released over the
last ``release`` of the period's traffic: ``course(F) = F * (1 - reserve * min(1, (1 - F) / release))``.
A burst then overspends into the reserve first, so the spend is back near the target curve
sooner, and the controller can pay the overspend back over a longer horizon, at a steadier
price.  Once the spend is more than ``band`` (a share of the budget) above the target curve
itself, it pays back faster, over ``catch_up``: a burst too big for the reserve is not left
off track for long.

``spend_per_request`` is measured, for a grid of lambdas, on the options (predicted quality
and expected cost of each candidate) of the last ``window`` requests, and corrected by the
ratio of actual to expected cost of what was served.  ``expected_requests`` is the arrival
level (requests per unit of profile mass) of the last ``rate_window`` times the profile's
mass ahead, except that a level above that of the last ``level_window`` (a burst) is
expected to last only ``rate_window`` more.  Re-solving at every request from what is
left makes it self-correcting: an overspend is paid back within ``horizon``, and a burst
raises lambda within ``rate_window``.  See ``docs/budgets.md``.

>>> parse_budget("50/day")
Budget(usd=50.0, per='day', mode='pace', floor_model=None)
>>> parse_budget({"usd": 5, "per": "week", "mode": "cap"}).mode
'cap'
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crossroads.errors import CrossroadsError

PERIODS = ("day", "week", "month")
MODES = ("pace", "cap")
#: The willingness-to-pay grid the controller measures spend on (quality units per US$): 0, then log-spaced.
LAMBDA_GRID = np.concatenate([[0.0], np.logspace(-2, 9, 111)])
#: In cap mode the controller paces towards this share of the budget, so that the last requests' cost
#: above their expectation does not take the spend over it (the hard stop guards the rest).
CAP_HEADROOM = 0.02
_EXAMPLE = "e.g. `50/day`, `10/week:cap` or {usd: 50, per: day, mode: pace, floor_model: small}"


@dataclass(frozen=True)
class Budget:
    """``usd`` (> 0) per UTC ``per`` (day, week, month) in ``mode`` (pace, cap).

    ``floor_model`` answers once a pace budget is gone (default: the cheapest candidate).
    """

    usd: float
    per: str = "day"
    mode: str = "pace"
    floor_model: str | None = None

    def __post_init__(self) -> None:
        usd = self.usd
        if isinstance(usd, bool) or not isinstance(usd, (int, float, np.integer, np.floating)) \
                or not math.isfinite(usd):
            raise CrossroadsError(f"budget usd must be a number of US$, got {usd!r}; {_EXAMPLE}")
        if usd <= 0:
            raise CrossroadsError(f"budget usd is {usd:g}: a budget cannot be negative or zero (revoke a key, or "
                                  f"remove a route, to stop its spending); {_EXAMPLE}")
        object.__setattr__(self, "usd", float(usd))
        if self.per not in PERIODS:
            raise CrossroadsError(f"{self.per!r} is not a budget period; use one of {', '.join(PERIODS)}; {_EXAMPLE}")
        if self.mode not in MODES:
            raise CrossroadsError(f"{self.mode!r} is not a budget mode; use pace (keep serving, spend evenly) or cap "
                                  "(refuse once spent)")
        if self.floor_model is not None and (not isinstance(self.floor_model, str) or not self.floor_model.strip()):
            raise CrossroadsError(f"budget floor_model must be a model name, got {self.floor_model!r}")

    def __str__(self) -> str:
        return f"{self.usd:g} US$/{self.per} ({self.mode})"

    def period(self, now_s: float) -> tuple[float, float]:
        """The UTC period holding ``now_s``: (start, end) in Unix seconds."""
        return period_bounds(self.per, now_s)


def parse_budget(value: str | Mapping[str, object] | Budget, default_mode: str = "pace") -> Budget:
    """A Budget from ``"50/day"``, ``"50/day:cap"`` or a mapping ``{usd, per, mode, floor_model}``;
    ``default_mode`` when the value names none.

    >>> parse_budget("2.5/month:cap")
    Budget(usd=2.5, per='month', mode='cap', floor_model=None)
    """
    if isinstance(value, Budget):
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"usd", "per", "mode", "floor_model"})
        if unknown:
            raise CrossroadsError(f"budget has unknown keys {unknown}; known keys: floor_model, mode, per, usd")
        if "usd" not in value:
            raise CrossroadsError(f"budget needs `usd`, the US$ it may spend per period; {_EXAMPLE}")
        return Budget(**{"mode": default_mode, **{str(k): v for k, v in value.items()}})  # type: ignore[arg-type]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Budget(float(value), mode=default_mode)
    if not isinstance(value, str) or "/" not in value:
        raise CrossroadsError(f"budget {value!r} is not USD/PERIOD[:MODE]; {_EXAMPLE}")
    amount, _, rest = value.strip().partition("/")
    per, _, mode = rest.partition(":")
    try:
        usd = float(amount.strip().lstrip("$"))
    except ValueError:
        raise CrossroadsError(f"budget {value!r}: {amount.strip()!r} is not a number of US$; {_EXAMPLE}") from None
    return Budget(usd, per.strip().lower(), mode.strip().lower() or default_mode)


def period_bounds(per: str, now_s: float) -> tuple[float, float]:
    """Start and end (Unix seconds) of the UTC ``per`` (day; ISO week, from Monday; calendar month) holding ``now_s``.

    >>> period_bounds("week", 1700000000.0)  # Tuesday 14 November 2023
    (1699833600.0, 1700438400.0)
    """
    now = dt.datetime.fromtimestamp(now_s, dt.timezone.utc)
    day = dt.datetime(now.year, now.month, now.day, tzinfo=dt.timezone.utc)
    if per == "day":
        start, end = day, day + dt.timedelta(days=1)
    elif per == "week":
        start = day - dt.timedelta(days=now.weekday())
        end = start + dt.timedelta(days=7)
    elif per == "month":
        start = day.replace(day=1)
        end = start + dt.timedelta(days=calendar.monthrange(now.year, now.month)[1])
    else:
        raise CrossroadsError(f"unknown budget period {per!r}; use one of {', '.join(PERIODS)}")
    return start.timestamp(), end.timestamp()


class TrafficProfile:
    """The expected share of a period's requests over its time: ``weights`` per equal bin (uniform by default).

    ``mass(a, b)`` is the expected share of requests in ``[a, b)``, times given as fractions of the period.
    """

    def __init__(self, weights: Sequence[float] | None = None):
        w = np.ones(1) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or not len(w) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise CrossroadsError("a traffic profile is a non-empty list of finite weights >= 0, not all 0")
        self.weights = w / w.sum()
        self._cumulative = np.concatenate([[0.0], np.cumsum(self.weights)])

    def cumulative(self, fraction: float | np.ndarray) -> float | np.ndarray:
        """Expected share of the period's requests before ``fraction`` of it (piecewise linear)."""
        edges = np.linspace(0.0, 1.0, len(self.weights) + 1)
        return np.interp(np.clip(fraction, 0.0, 1.0), edges, self._cumulative)

    def mass(self, start: float, end: float) -> float:
        return float(self.cumulative(end) - self.cumulative(start))

    @classmethod
    def from_arrivals(cls, fractions: Sequence[float] | np.ndarray, bins: int = 24) -> TrafficProfile:
        """The profile of past arrivals (times as fractions of their period), ``bins`` equal bins, smoothed by one."""
        counts = np.histogram(np.clip(fractions, 0.0, 1.0 - 1e-12), bins=bins, range=(0.0, 1.0))[0]
        return cls(counts + 1.0)


@dataclass(frozen=True)
class PacingState:
    """What the controller decided for a request: ``willingness_to_pay`` and the figures behind it."""

    willingness_to_pay: float  # lambda, quality units per US$
    spent_usd: float
    target_usd: float  # where the spend should be now on the target curve
    remaining_usd: float
    exhausted: bool  # nothing (cap: not even the cheapest candidate's expected cost) is left

    def as_scores(self) -> dict[str, float]:
        return {"willingness_to_pay": self.willingness_to_pay, "spent_usd": self.spent_usd,
                "target_usd": self.target_usd, "remaining_usd": self.remaining_usd}


class PacingController:
    """Spends ``budget`` over each period: the willingness to pay of every request (see the module's docstring).

    Call :meth:`state` with the request's candidates (predicted quality, expected cost in
    US$), the time and the period's spend so far (read from wherever it is kept), then
    :meth:`choose`; after the request, :meth:`served` with its expected and actual cost if
    known.  ``profile`` shapes the expected traffic over the period; ``window`` is how many
    recent requests the spend curve is measured on, ``rate_window`` the share of the
    period the arrival rate is measured over; ``reserve`` and ``release`` shape the course it
    steers by, ``horizon`` is how soon it wants to be back on it, ``catch_up`` how soon once the
    spend is more than ``band`` above the target curve (see the module).
    """

    def __init__(self, budget: Budget, profile: TrafficProfile | None = None, *, window: int = 400,
                 rate_window: float = 0.02, level_window: float = 0.2, horizon: float = 0.2,
                 reserve: float = 0.06, release: float = 0.3, catch_up: float = 0.08, band: float = 0.03,
                 warmup_requests: int = 20):
        if not (0 <= reserve < release <= 1 and 0 < catch_up <= horizon <= 1 and band >= 0):
            # reserve < release: the course never falls
            raise CrossroadsError(f"pacing: need 0 <= reserve < release <= 1, 0 < catch_up <= horizon <= 1 and band "
                                  f">= 0; got {reserve}, {release}, {catch_up}, {horizon}, {band}")
        self.budget = budget
        self.profile = profile or TrafficProfile()
        self.window = window
        self.rate_window = rate_window
        self.level_window = max(level_window, rate_window)
        self.horizon = horizon
        self.reserve = reserve
        self.release = release
        self.catch_up = catch_up
        self.band = band
        self.warmup_requests = warmup_requests
        self._spend_at = deque(maxlen=window)  # per request: the cost chosen at each grid lambda
        self._sum = np.zeros(len(LAMBDA_GRID))
        self._arrivals: deque[float] = deque()  # times (fraction of the period) of the requests of the level window
        self._recent: deque[float] = deque()  # those of the rate window
        self._expected_usd = 0.0  # of what was served, for the actual / expected cost ratio
        self._actual_usd = 0.0
        self._period: tuple[float, float] | None = None
        self.willingness_to_pay = 0.0

    # -- per request -------------------------------------------------------------------------
    def state(self, quality: np.ndarray, cost_usd: np.ndarray, now_s: float, spent_usd: float,
              period: tuple[float, float] | None = None) -> PacingState:
        """Observe one request's options and set the willingness to pay for it."""
        start, end = period or self.budget.period(now_s)
        if self._period != (start, end):
            self._new_period(start, end)
        quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost_usd, dtype=np.float64)
        self._observe(quality, cost)
        fraction = min(max((now_s - start) / (end - start), 0.0), 1.0)
        for arrivals, window in ((self._arrivals, self.level_window), (self._recent, self.rate_window)):
            arrivals.append(fraction)
            while arrivals and arrivals[0] < fraction - window:
                arrivals.popleft()
        goal = self.budget.usd * (1.0 - (CAP_HEADROOM if self.budget.mode == "cap" else 0.0))
        remaining = self.budget.usd - spent_usd
        share = float(self.profile.cumulative(fraction))  # of the period's traffic expected so far
        target = self.budget.usd * share
        cheapest = float(np.min(cost)) if cost.size else 0.0
        exhausted = remaining <= 0 or (self.budget.mode == "cap" and remaining < cheapest)
        if not exhausted:
            self.willingness_to_pay = self._solve(goal, spent_usd, fraction, share)
        return PacingState(self.willingness_to_pay, float(spent_usd), float(target), float(remaining), exhausted)

    def choose(self, quality: np.ndarray, cost_usd: np.ndarray, state: PacingState) -> int | None:
        """Index of the candidate to serve: the best ``quality - lambda * cost``; in cap mode only those that fit.

        None when cap mode leaves nothing to serve; once exhausted in pace mode, the cheapest.
        """
        quality, cost = np.asarray(quality, dtype=np.float64), np.asarray(cost_usd, dtype=np.float64)
        if state.exhausted:
            return None if self.budget.mode == "cap" else int(np.argmin(cost))
        value = quality - state.willingness_to_pay * cost
        if self.budget.mode == "cap":
            value = np.where(cost <= state.remaining_usd, value, -np.inf)
            if not np.isfinite(value).any():
                return None
        best = np.flatnonzero(value >= np.max(value) - 1e-12)
        return int(best[np.argmin(cost[best])])

    def served(self, expected_usd: float, actual_usd: float | None) -> None:
        """Record what a served request was expected to cost and cost (None: not known yet)."""
        if actual_usd is not None and math.isfinite(actual_usd) and math.isfinite(expected_usd):
            self._expected_usd += expected_usd
            self._actual_usd += actual_usd

    # -- internals -----------------------------------------------------------------------------
    def _new_period(self, start: float, end: float) -> None:
        self._period = (start, end)
        self._arrivals.clear()
        self._recent.clear()  # the spend curve and the cost ratio carry over: the traffic is the same kind

    def _observe(self, quality: np.ndarray, cost: np.ndarray) -> None:
        if not quality.size:
            return
        value = quality[None, :] - LAMBDA_GRID[:, None] * cost[None, :]
        top = value >= value.max(axis=1, keepdims=True) - 1e-12
        chosen = np.where(top, cost[None, :], np.inf).min(axis=1)  # ties to the cheaper
        if len(self._spend_at) == self._spend_at.maxlen:
            self._sum -= self._spend_at[0]
        self._spend_at.append(chosen)
        self._sum += chosen

    def _level(self, arrivals: deque, window: float, fraction: float) -> float | None:
        """Requests per unit of profile mass over the last ``window`` (None: too few to tell)."""
        mass = self.profile.mass(max(fraction - window, 0.0), fraction)
        return len(arrivals) / mass if len(arrivals) >= self.warmup_requests and mass > 0 else None

    def _expected_requests(self, fraction: float, ahead: float) -> float:
        """Requests expected in ``[fraction, ahead)``: the recent level, but an excess over the longer-run level
        (a burst) is expected to last only ``rate_window`` more."""
        recent = self._level(self._recent, self.rate_window, fraction)
        level = self._level(self._arrivals, self.level_window, fraction)
        if recent is None or level is None:  # too few requests yet: assume the rate so far holds
            seen_mass = self.profile.mass(max(fraction - self.level_window, 0.0), fraction)
            return len(self._arrivals) / max(seen_mass, 1e-9) * self.profile.mass(fraction, ahead)
        if recent <= level:
            return recent * self.profile.mass(fraction, ahead)
        excess = (recent - level) * self.profile.mass(fraction, min(fraction + self.rate_window, ahead))
        return level * self.profile.mass(fraction, ahead) + excess

    def course(self, share: float) -> float:
        """The share of the goal to have spent once ``share`` of the period's traffic is past: the target curve less
        the burst reserve, which is released over the last ``release`` of the traffic (see the module)."""
        return share * (1.0 - self.reserve * min(1.0, (1.0 - share) / self.release))

    def _solve(self, goal_usd: float, spent_usd: float, fraction: float, share: float) -> float:
        off_track = spent_usd > goal_usd * (share + self.band)
        ahead = min(fraction + (self.catch_up if off_track else self.horizon), 1.0)  # be back on course this far ahead
        left_usd = goal_usd * self.course(float(self.profile.cumulative(ahead))) - spent_usd
        if left_usd <= 0:
            return float(LAMBDA_GRID[-1])
        expected = self._expected_requests(fraction, ahead)
        per_request = left_usd / max(expected, 1.0)
        ratio = self._actual_usd / self._expected_usd if self._expected_usd > 0 and self._actual_usd > 0 else 1.0
        curve = self._sum / max(len(self._spend_at), 1) * ratio  # non-increasing in lambda
        if per_request >= curve[0]:
            return 0.0
        if per_request <= curve[-1]:
            return float(LAMBDA_GRID[-1])
        i = int(np.argmax(curve <= per_request))  # first grid point spending no more than allowed
        lo, hi = curve[i - 1], curve[i]
        share = (lo - per_request) / (lo - hi) if lo > hi else 1.0
        if i == 1:
            return float(LAMBDA_GRID[1] * share)
        return float(math.exp(math.log(LAMBDA_GRID[i - 1]) + share * (math.log(LAMBDA_GRID[i]) -
                                                                     math.log(LAMBDA_GRID[i - 1]))))
