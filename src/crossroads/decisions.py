"""Decision rules: turn a router's scores into a model choice per query.

Pure numpy, vectorised over queries.  Used by the evaluation harness, by
threshold calibration and by the server, so that all three decide the same way.

Two families:

* strong/weak (RouteLLM): a win probability P(strong beats weak) per query and
  a threshold; the strong model is called when the probability is >= threshold.
* any number of models: predicted quality ``(n_queries, n_models)`` and expected
  cost in US$; pick the model with the best utility ``quality - wtp * cost``
  (:func:`choose_max_utility`) or the cheapest model whose prediction is close to
  the best one (:func:`choose_cheapest_within`).

Ties are broken by lower expected cost, then by column order (the first model of
the pool wins).  Values equal up to rounding (within ``TIE_RTOL`` relative, at
least 1e-12 absolute) count as ties, so that 0.7 - 0.2 and 0.9 - 0.4 tie.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np

from crossroads.errors import CrossroadsError

OverCap = Literal["cheapest", "raise"]
TIE_RTOL = 1e-12

_ROUTELLM_MODEL = re.compile(r"router-(?P<router>[A-Za-z0-9_]+)-(?P<threshold>.+)")


# -- strong / weak -------------------------------------------------------------
def route_strong_weak(win_probability: np.ndarray | float, threshold: float) -> np.ndarray:
    """True where the strong model is called: ``win_probability >= threshold`` (RouteLLM's rule)."""
    threshold = _finite_scalar(threshold, "threshold")
    p = np.asarray(win_probability, dtype=np.float64)
    if np.isnan(p).any():
        raise CrossroadsError("win probabilities contain NaN: the router produced no score for some queries")
    return p >= threshold


def calibrate_threshold(win_probabilities: np.ndarray, strong_share: float) -> float:
    """The threshold that sends ``strong_share`` of the calibration queries to the strong model.

    Same as RouteLLM's ``calibrate_threshold.py``: the ``1 - strong_share`` quantile
    of the win probabilities with linear interpolation.  On untied probabilities the
    share routed strong by :func:`route_strong_weak` is within ``1/n`` of the target.
    """
    strong_share = _finite_scalar(strong_share, "strong_share")
    if not 0.0 <= strong_share <= 1.0:
        raise CrossroadsError(f"strong_share must be a fraction in [0, 1] (0.3 = 30% strong calls), got {strong_share}")
    p = np.asarray(win_probabilities, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise CrossroadsError(f"need a non-empty 1-D array of win probabilities, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise CrossroadsError("win probabilities contain NaN or infinity")
    return float(np.quantile(p, 1.0 - strong_share))


def parse_routellm_model(name: str) -> tuple[str, float]:
    """``"router-<router>-<threshold>"`` -> ``(router, threshold)``, as RouteLLM's server reads it.

    >>> parse_routellm_model("router-sw_ranking-0.2143")
    ('sw_ranking', 0.2143)
    """
    match = _ROUTELLM_MODEL.fullmatch(name.strip()) if isinstance(name, str) else None
    expected = (
        "expected a model name of the form 'router-<router>-<threshold>', e.g. 'router-mf-0.11593' "
        "(router name: letters, digits and underscores; threshold: a number in [0, 1])"
    )
    if match is None:
        raise CrossroadsError(f"malformed RouteLLM model name {name!r}: {expected}")
    try:
        threshold = float(match["threshold"])
    except ValueError:
        raise CrossroadsError(
            f"malformed RouteLLM model name {name!r}: threshold is not a number; {expected}"
        ) from None
    if not 0.0 <= threshold <= 1.0:  # also rejects nan
        raise CrossroadsError(f"RouteLLM model name {name!r}: threshold {threshold} is outside [0, 1]; {expected}")
    return match["router"], threshold


# -- any number of models ------------------------------------------------------------
def choose_max_utility(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    willingness_to_pay: float | np.ndarray,
    allowed: np.ndarray | None = None,
    max_cost_usd: float | np.ndarray | None = None,
    *,
    if_none_within_cap: OverCap = "cheapest",
) -> np.ndarray:
    """Per query, the column maximising ``predicted_quality - willingness_to_pay * expected_cost_usd``.

    ``willingness_to_pay`` is in quality units per US$ (scalar or one per query):
    0 picks the best predicted model, a large value the cheapest.  Only ``allowed``
    models (bool mask ``(n_models,)`` or ``(n_queries, n_models)``) whose expected
    cost is <= ``max_cost_usd`` compete.  When no allowed model fits under the cap,
    ``if_none_within_cap="cheapest"`` picks the cheapest allowed model (see
    :func:`cost_cap_unmet` to flag those queries) and ``"raise"`` raises.
    Ties: lower expected cost, then column order.
    """
    quality, cost, mask = _candidates(predicted_quality, expected_cost_usd, allowed, max_cost_usd, if_none_within_cap)
    wtp = np.asarray(willingness_to_pay, dtype=np.float64)
    if wtp.ndim > 1 or (wtp.ndim == 1 and len(wtp) != len(quality)):
        raise CrossroadsError(
            f"willingness_to_pay must be a number or one value per query ({len(quality)}), got shape {wtp.shape}"
        )
    if not np.isfinite(wtp).all() or (wtp < 0).any():
        raise CrossroadsError(
            "willingness_to_pay must be finite and >= 0 (quality units per US$; 0 = ignore cost)"
        )
    utility = quality - (wtp[:, None] if wtp.ndim else wtp) * cost
    utility = np.where(mask, utility, -np.inf)
    best = utility.max(axis=1, keepdims=True)
    tied = mask & (utility >= best - _slack(best))
    return np.argmin(np.where(tied, cost, np.inf), axis=1)


def choose_cheapest_within(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    tolerance: float,
    allowed: np.ndarray | None = None,
    max_cost_usd: float | np.ndarray | None = None,
    *,
    if_none_within_cap: OverCap = "cheapest",
) -> np.ndarray:
    """Per query, the cheapest model predicted within ``tolerance`` of the best allowed prediction.

    ``tolerance`` is absolute, in quality units (0.02 = two points on a 0-1 scale).
    Candidates are the allowed models under ``max_cost_usd`` (same fallback as
    :func:`choose_max_utility`).  Ties in cost: higher prediction, then column order.
    """
    tolerance = _finite_scalar(tolerance, "tolerance")
    if tolerance < 0:
        raise CrossroadsError(f"tolerance must be >= 0 (quality units below the best prediction), got {tolerance}")
    quality, cost, mask = _candidates(predicted_quality, expected_cost_usd, allowed, max_cost_usd, if_none_within_cap)
    best = np.where(mask, quality, -np.inf).max(axis=1, keepdims=True)
    close = mask & (quality >= best - tolerance - _slack(best))
    cheapest = np.where(close, cost, np.inf).min(axis=1, keepdims=True)
    tied = close & (cost == cheapest)
    return np.argmax(np.where(tied, quality, -np.inf), axis=1)


def cost_cap_unmet(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    max_cost_usd: float | np.ndarray | None,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """True for the queries where no allowed model's expected cost is <= ``max_cost_usd``.

    Those are the queries on which the choose functions fell back to the cheapest
    allowed model (with ``if_none_within_cap="cheapest"``).
    """
    quality, cost, allowed_mask = _checked(predicted_quality, expected_cost_usd, allowed)
    if max_cost_usd is None:
        return np.zeros(len(quality), dtype=bool)
    cap = _cap(max_cost_usd, len(quality))
    return ~(allowed_mask & (cost <= cap[:, None])).any(axis=1)


# -- helpers -------------------------------------------------------------------
def _slack(best: np.ndarray) -> np.ndarray:
    """How far below the best value still counts as a tie (rounding error only)."""
    return TIE_RTOL * np.maximum(1.0, np.abs(best))


def _finite_scalar(value: object, name: str) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CrossroadsError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise CrossroadsError(f"{name} must be a finite number, got {number}")
    return number


def _checked(
    predicted_quality: np.ndarray, expected_cost_usd: np.ndarray, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(quality (n,m), cost (n,m), allowed (n,m))``."""
    quality = np.asarray(predicted_quality, dtype=np.float64)
    if quality.ndim != 2 or quality.shape[1] == 0:
        raise CrossroadsError(
            f"predicted quality must have shape (n_queries, n_models), got {quality.shape}; "
            "for a single query pass quality[None, :]"
        )
    n, m = quality.shape
    if not np.isfinite(quality).all():
        raise CrossroadsError("predicted quality contains NaN or infinity: every allowed model needs a prediction")
    cost = np.asarray(expected_cost_usd, dtype=np.float64)
    if cost.shape not in ((m,), (n, m)):
        raise CrossroadsError(
            f"expected cost must have shape ({m},) or ({n}, {m}) to match the predictions, got {cost.shape}"
        )
    if not np.isfinite(cost).all() or (cost < 0).any():
        raise CrossroadsError("expected costs must be finite and >= 0 US$")
    cost = np.broadcast_to(cost, (n, m))
    if allowed is None:
        mask = np.ones((n, m), dtype=bool)
    else:
        mask = np.asarray(allowed)
        if mask.dtype != bool:
            raise CrossroadsError(f"allowed must be a boolean mask, got dtype {mask.dtype}")
        if mask.shape not in ((m,), (n, m)):
            raise CrossroadsError(f"allowed must have shape ({m},) or ({n}, {m}), got {mask.shape}")
        mask = np.broadcast_to(mask, (n, m))
        empty = ~mask.any(axis=1)
        if empty.any():
            raise CrossroadsError(
                f"no model is allowed for {int(empty.sum())} of {n} queries (first: query {int(np.argmax(empty))}); "
                "allow at least one model per query"
            )
    return quality, cost, mask


def _cap(max_cost_usd: float | np.ndarray, n: int) -> np.ndarray:
    cap = np.asarray(max_cost_usd, dtype=np.float64)
    if cap.ndim > 1 or (cap.ndim == 1 and len(cap) != n):
        raise CrossroadsError(f"max_cost_usd must be a number or one value per query ({n}), got shape {cap.shape}")
    if np.isnan(cap).any() or (cap < 0).any():
        raise CrossroadsError("max_cost_usd must be >= 0 US$ (use None for no cap)")
    return np.broadcast_to(cap, (n,))


def _candidates(
    predicted_quality: np.ndarray,
    expected_cost_usd: np.ndarray,
    allowed: np.ndarray | None,
    max_cost_usd: float | np.ndarray | None,
    if_none_within_cap: OverCap,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated arrays plus the mask of models competing for each query."""
    if if_none_within_cap not in ("cheapest", "raise"):
        raise CrossroadsError(f"if_none_within_cap must be 'cheapest' or 'raise', got {if_none_within_cap!r}")
    quality, cost, mask = _checked(predicted_quality, expected_cost_usd, allowed)
    if max_cost_usd is None:
        return quality, cost, mask
    cap = _cap(max_cost_usd, len(quality))
    within = mask & (cost <= cap[:, None])
    unmet = ~within.any(axis=1)
    if unmet.any():
        if if_none_within_cap == "raise":
            first = int(np.argmax(unmet))
            cheapest = float(np.where(mask[first], cost[first], np.inf).min())
            raise CrossroadsError(
                f"no allowed model fits under max_cost_usd for {int(unmet.sum())} queries "
                f"(query {first}: cap {cap[first]:g} US$, cheapest allowed model {cheapest:g} US$); "
                "raise the cap or allow cheaper models"
            )
        allowed_cost = np.where(mask, cost, np.inf)
        cheapest_allowed = mask & (allowed_cost == allowed_cost.min(axis=1, keepdims=True))
        within = np.where(unmet[:, None], cheapest_allowed, within)
    return quality, cost, within
