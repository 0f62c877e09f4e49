"""LinUCB: a ridge regression per model on the prompt embedding, with an optimism bonus."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from crossroads.checks import check_bool, check_fraction, check_positive
from crossroads.errors import CrossroadsError
from crossroads.online.base import Learner, argmax_ties, uniform_over

#: A prior predicted quality: fixed per model, or per query from the prompt embedding.
Prior = Mapping[str, float] | Callable[[np.ndarray], Mapping[str, float]]


class LinUCB(Learner):
    """Routes each query on its own content: ``x . theta_m + exploration * sqrt(x' A_m^-1 x)``.

    Every model ``m`` keeps its own ridge regression of reward on the context ``x``
    (disjoint LinUCB, Li et al. 2010): ``A_m = ridge * I + sum x x'`` and
    ``theta_m = A_m^-1 sum r x``.  ``A_m^-1`` is kept up to date by Sherman-Morrison,
    so one select plus one update costs O(k d^2) for ``k`` candidates and ``d``
    dimensions, with no matrix inversion.  ``fit_intercept`` appends a constant 1 to
    the context, so each model also learns its average reward.  Rewards may be any
    finite number.  The choice is deterministic apart from ties (probability 1, or
    ``1/t`` among ``t`` tied models).

    **Warm start.** :meth:`warm_start` takes a prior predicted quality per model, either
    fixed (``{"small": 0.6, "large": 0.8}``) or per query (a function of the embedding,
    or a fitted offline :class:`~crossroads.routers.Router`).  The prior is added to
    every score and the regressions learn the residual ``reward - prior``; ridge
    shrinks the residual towards 0, so the learner follows the prior until its own
    observations say otherwise.  Models the prior does not name get the mean of the
    values it gives.  A prior can also come with each call (``select(..., prior=)`` and
    ``update(..., prior=)``, or through the decision): the server's routes that put a
    learner on top of a router pass the router's expected reward for each request this way.

    **Drift.** With ``discount`` gamma < 1 every model's statistics are multiplied by
    gamma at each reward (discounted LinUCB, Russac et al. 2019), so uncertainty grows
    back for models that are not tried and old observations fade.  Decay is applied
    lazily per model; the ridge term that decays with it is restored by recomputing
    ``A_m^-1`` exactly once it has halved (about every ``ln 2 / (1 - gamma)``
    rewards of that model), and in between the bonus is capped by the prior variance.

    >>> rng = np.random.default_rng(0)
    >>> learner = LinUCB(exploration=0.1, seed=0)
    >>> for _ in range(200):
    ...     x = rng.normal(size=3)
    ...     decision = learner.select(["small", "large"], context=x)
    ...     learner.update(decision, reward=float((x[0] > 0) == (decision.model == "large")))
    >>> learner.select(["small", "large"], context=np.array([2.0, 0.0, 0.0])).model
    'large'
    """

    name = "linucb"
    contextual = True
    reward_range = None
    takes_prior = True

    def __init__(
        self,
        exploration: float = 1.0,
        ridge: float = 1.0,
        fit_intercept: bool = True,
        discount: float = 1.0,
        seed: int | None = None,
    ):
        check_positive(exploration, "exploration", allow_zero=True)
        check_positive(ridge, "ridge")
        check_fraction(discount, "discount", low_open=True)
        check_bool(fit_intercept, "fit_intercept")
        self.exploration = exploration
        self.ridge = ridge
        self.fit_intercept = fit_intercept
        self.discount = discount
        self._prior_fn: Callable[[np.ndarray], Mapping[str, float]] | None = None
        super().__init__(seed=seed)

    # -- warm start -------------------------------------------------------------
    def warm_start(self, prior: Prior | Any, weight: float = 2.0) -> LinUCB:
        """Start from a prior predicted quality per model (a mapping, a function of the
        embedding, or a fitted offline router); call it before the first update.

        ``weight`` is how many observations the prior is worth in each direction of the
        embedding: it is added to ``ridge``, which shrinks the learned residuals harder
        and shrinks the exploration bonus by ``sqrt(ridge / (ridge + weight))``.  A
        mapping is saved with the state; a function or router is not, so pass it again
        to :meth:`from_state`.
        """
        check_positive(weight, "weight", allow_zero=True)
        with self._lock:
            if self.updates_:
                raise CrossroadsError(
                    "warm_start() must come before the first update: the learned residuals assume no prior"
                )
            if isinstance(prior, Mapping):
                self.stats_["prior"] = _check_prior_values(prior)
                self.stats_["prior_callable"] = False
                self._prior_fn = None
            else:
                self._prior_fn = _as_prior_fn(prior)
                self.stats_["prior"] = None
                self.stats_["prior_callable"] = True
            self.stats_["prior_weight"] = float(weight)
            for model, arm in self.arms_.items():  # no update yet: start every regression afresh
                self.arms_[model] = self._new_arm(model) | {"pulls": arm["pulls"]}
        return self

    @classmethod
    def from_state(cls, state: dict[str, Any], prior: Prior | Any | None = None) -> LinUCB:
        """The learner that wrote ``state``; ``prior`` re-attaches a function or router warm start."""
        learner = super().from_state(state)
        if learner.stats_.get("prior_callable"):
            if prior is None:
                raise CrossroadsError(
                    "this learner was warm-started from a function or router, which the state cannot hold: "
                    "pass it again with from_state(state, prior=...)"
                )
            learner._prior_fn = _as_prior_fn(prior)
        return learner

    def clone(self) -> LinUCB:
        return type(self).from_state(self.state(), prior=self._prior_fn)

    # -- hooks ------------------------------------------------------------------
    def _new_stats(self) -> dict[str, Any]:
        return {"dim": None, "time": 0, "prior": None, "prior_callable": False, "prior_weight": 0.0}

    def _new_arm(self, model: str) -> dict[str, Any]:
        if self.stats_["dim"] is None:
            return {"last": self.stats_["time"]}  # arrays come with the first context
        return self._fresh_arm()

    def _fresh_arm(self) -> dict[str, Any]:
        size = self.stats_["dim"] + int(self.fit_intercept)
        arm = {
            "A_inv": np.eye(size) / self._ridge(),
            "b": np.zeros(size),
            "theta": np.zeros(size),
            "last": self.stats_["time"],
        }
        if self.discount < 1.0:
            arm["A"] = np.eye(size) * self._ridge()
            arm["reg"] = self._ridge()  # ridge still inside A_inv after decay
        return arm

    def _check_context(self, context: np.ndarray | None) -> np.ndarray:
        if context is None:
            raise CrossroadsError(
                f"the {self.name} learner routes on the prompt embedding: pass context= (a 1-D vector)"
            )
        x = np.asarray(context, dtype=np.float64)
        if x.ndim != 1 or x.size == 0:
            raise CrossroadsError(f"context must be one non-empty 1-D embedding, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise CrossroadsError("context contains NaN or infinity")
        dim = self.stats_["dim"]
        if dim is None:
            self.stats_["dim"] = x.size
            for name, arm in self.arms_.items():
                self.arms_[name] = self._fresh_arm() | {"pulls": arm["pulls"]}
        elif x.size != dim:
            raise CrossroadsError(f"context has {x.size} dimensions; this learner has seen {dim}-dimensional ones")
        return x

    def _select(self, candidates, context, rng):
        mean, std = self._posterior(candidates, context)
        score = [m + self.exploration * s for m, s in zip(mean, std)]
        chosen, ties = argmax_ties(score, rng)
        return candidates[chosen], uniform_over(candidates, ties), dict(zip(candidates, score))

    def _update(self, model: str, reward: float, context: np.ndarray | None) -> None:
        target = reward - self._prior_values([model], context)[0]  # first: a failing prior changes nothing
        z = self._features(context)
        arm = self.arms_[model]
        self.stats_["time"] += 1
        refresh = False
        if self.discount < 1.0:
            factor = self.discount ** (self.stats_["time"] - arm["last"])
            arm["b"] *= factor
            arm["A"] *= factor
            arm["A"][np.diag_indices_from(arm["A"])] += (1.0 - factor) * self._ridge()
            arm["A"] += np.outer(z, z)
            arm["reg"] *= factor
            refresh = arm["reg"] < 0.5 * self._ridge()
            if not refresh:
                arm["A_inv"] /= factor
        arm["last"] = self.stats_["time"]
        if refresh:  # the ridge inside A_inv has halved: restore it exactly
            arm["A_inv"] = _spd_inverse(arm["A"])
            arm["reg"] = self._ridge()
        else:  # Sherman-Morrison
            a_inv = arm["A_inv"]
            az = a_inv @ z
            a_inv -= np.outer(az, az / (1.0 + z @ az))
        arm["b"] += target * z
        arm["theta"] = arm["A_inv"] @ arm["b"]

    # -- shared with LinTS --------------------------------------------------------
    def _ridge(self) -> float:
        """The regularisation of every regression: ``ridge`` plus the warm start's weight."""
        return float(self.ridge + self.stats_["prior_weight"])

    def _features(self, x: np.ndarray) -> np.ndarray:
        return np.append(x, 1.0) if self.fit_intercept else x

    def _posterior(self, candidates: list[str], x: np.ndarray) -> tuple[list[float], list[float]]:
        """Per candidate: predicted reward (prior included) and its standard deviation."""
        z = self._features(x)
        prior = self._prior_values(candidates, x)
        time, cap = self.stats_["time"], float(z @ z) / self._ridge()
        mean, std = [], []
        for model, p in zip(candidates, prior):
            arm = self.arms_[model]
            var = float(z @ (arm["A_inv"] @ z))
            if self.discount < 1.0:  # pending decay, bounded by the prior variance
                decay = self.discount ** (time - arm["last"])
                var = cap if var >= cap * decay else var / decay
            mean.append(float(arm["theta"] @ z) + p)
            std.append(math.sqrt(max(var, 0.0)))
        return mean, std

    def _prior_values(self, models: list[str], x: np.ndarray) -> list[float]:
        if self._call_prior is not None:  # given with this call: it wins over a warm start
            values = self._call_prior
        elif self._prior_fn is not None:
            values = _check_prior_values(self._prior_fn(x))
        elif self.stats_["prior"] is not None:
            values = self.stats_["prior"]
        elif self.stats_["prior_callable"]:
            raise CrossroadsError("the warm-start prior was not re-attached: use from_state(state, prior=...)")
        else:
            return [0.0] * len(models)
        default = sum(values.values()) / len(values) if values else 0.0
        return [values.get(m, default) for m in models]


def _spd_inverse(a: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix through its Cholesky factor (several times faster than inv)."""
    from scipy.linalg import lapack

    factor, info = lapack.dpotrf(a, lower=False)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=False)
    if info != 0:  # not positive definite after rounding: fall back to the general inverse
        return np.linalg.inv(a)
    return np.triu(inverse) + np.triu(inverse, 1).T


def router_prior(router: Any) -> Callable[[np.ndarray], dict[str, float]]:
    """A warm-start prior from a fitted offline router: its predicted quality per model.

    Only routers that read embeddings alone qualify (not those with ``reads_text``).
    """
    if getattr(router, "reads_text", False):
        raise CrossroadsError(f"the {router.name} router reads prompt text, which online learners do not see")
    models = list(router.models_)

    def prior(x: np.ndarray) -> dict[str, float]:
        return dict(zip(models, router.predict(np.asarray(x, dtype=np.float32)[None, :])[0].tolist()))

    return prior


def _as_prior_fn(prior: Any) -> Callable[[np.ndarray], Mapping[str, float]]:
    if hasattr(prior, "predict") and hasattr(prior, "models_"):
        return router_prior(prior)
    if callable(prior):
        return prior
    raise CrossroadsError(
        f"a prior is a mapping model -> quality, a function of the embedding or a fitted router, got {type(prior).__name__}"
    )


def _check_prior_values(values: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(values, Mapping):
        raise CrossroadsError(f"the prior must give a mapping model -> predicted quality, got {type(values).__name__}")
    checked = {}
    for model, value in values.items():
        if not isinstance(model, str) or isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise CrossroadsError(f"prior entries must be model name -> number, got {model!r}: {value!r}")
        if not math.isfinite(value):
            raise CrossroadsError(f"prior for {model!r} is not finite: {value}")
        checked[model] = float(value)
    return checked
