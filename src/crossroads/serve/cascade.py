"""Served cascades: call a model, judge its answer, stop or call another, return the answer trusted most.

A route with ``cascade:`` (:class:`crossroads.serve.config.CascadeConfig`) decides as a router
route does: the router's predicted quality and expected cost of each candidate are the
cascade's prior, and its first call is the decision's model.  After each answer the route's
verifier (:mod:`crossroads.grading.verifiers`) gives each answer seen so far a trust, and
cascade routing (:class:`crossroads.evaluate.cascade.CascadeRouting`, the same policy that
``crossroads eval --cascade routing`` replays) names the next model or stops.  Its
willingness to pay (quality per US$) comes from the route's objective, scaled as the
objective's reward scales cost (over the candidates' expected costs), or from a ``pace``
budget's controller when that is higher.  A model that fails is not called again and the
policy picks among the others: a failure mid-cascade falls back without charging for it.

Feedback teaches the trust: :class:`TrustCalibration` fits ``quality ~ trust`` (logistic, in
log-odds, shrunk to the identity) on the feedback of the route's decisions, so that a verifier
that trusts answers too much makes the cascade escalate more, and one that trusts too little,
less.  Every replica refits from the store's feedback (:meth:`Store.cascade_feedback`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossroads.evaluate.cascade import CascadeRouting, group_of, next_model
from crossroads.grading.verifiers import (
    PRIOR_FLOOR,
    AgreementVerifier,
    Answers,
    Verifier,
    fit_logistic,
    listed_options,
    load_verifier,
)
from crossroads.objective import Objective
from crossroads.serve.config import RouteConfig
from crossroads.serve.requests import BadRequest

#: Feedback a calibration refits on at most (the latest).
CALIBRATION_WINDOW = 2000
#: The calibration's pull towards the identity (trust taken as it is), in log-odds units squared.
CALIBRATION_ALPHA = 5.0
#: Feedback a replica receives on a route between two refits from the store.
REFIT_EVERY = 10


def willingness_to_pay(objective: Objective, expected_cost_usd: Sequence[float]) -> float:
    """Quality per US$ that the objective's reward trades: its cost weight over its quality weight, per the spread
    of the candidates' expected costs (the objective scales cost from the cheapest, 0, to the dearest, 1)."""
    spread = float(np.max(expected_cost_usd) - np.min(expected_cost_usd))
    if not objective.cost or spread <= 0:
        return 0.0
    return objective.cost / objective.quality / spread


class TrustCalibration:
    """``calibrated = sigmoid(a * logit(trust) + b)``, fitted on (trust of the returned answer, its quality).

    Starts as the identity (``a = 1, b = 0``); :meth:`fit` replaces the parameters with an
    L2-penalised logistic fit shrunk towards the identity, so that a few feedbacks barely move it.
    """

    def __init__(self) -> None:
        self.slope, self.intercept, self.examples = 1.0, 0.0, 0

    def __call__(self, trust: np.ndarray) -> np.ndarray:
        x = _log_odds(trust)
        return 1.0 / (1.0 + np.exp(-(self.slope * x + self.intercept)))

    def fit(self, trust: Sequence[float], quality: Sequence[float]) -> TrustCalibration:
        x = _log_odds(np.asarray(trust, dtype=np.float64))
        y = np.clip(np.asarray(quality, dtype=np.float64), 0.0, 1.0)
        if len(x):
            # the identity is the offset: the weights fitted (and penalised) are the departures from it
            w = fit_logistic(x[:, None], y, CALIBRATION_ALPHA, 25, offset=x, intercept_alpha=CALIBRATION_ALPHA)
            self.intercept, self.slope = float(w[0]), 1.0 + float(w[1])
        self.examples = len(x)
        return self


@dataclass
class Call:
    """One model called by a cascade: what it cost and took, and the trust in its answer (None if it failed)."""

    model: str
    status: str
    cost_usd: float | None = None
    latency_s: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    text: str | None = None
    trust: float | None = None  # calibrated: what the policy reads
    raw_trust: float | None = None  # the verifier's own, what the calibration learns from
    error: str | None = None

    def as_dict(self, text: bool = False) -> dict[str, Any]:
        """The call as JSON: its response text only if ``text`` (the store keeps it when it keeps prompts)."""
        return {key: value for key, value in vars(self).items() if (text or key != "text") and value is not None}


class Chain:
    """One request's cascade: its candidates' prior and expected cost, the calls made, what comes next.

    ``first`` is the decision's model (:meth:`ServedCascade.first_ranking` ranks for it; called first whatever
    the policy would say, so that a route's exploration and pacing hold); then :meth:`next` asks the policy,
    with the settings of the request's answer ``group`` (:func:`prompt_group` until an answer shows its kind).
    """

    def __init__(self, cascade: ServedCascade, models: list[str], prior: dict[str, float],
                 expected_cost_usd: dict[str, float], willingness_to_pay: float, max_cost_usd: float | None,
                 prompt: str, category: str | None, first: str):
        self.cascade, self.models, self.prompt, self.category = cascade, models, prompt, category
        self.prior = np.array([prior[m] for m in models], dtype=np.float64)
        self.expected = np.array([expected_cost_usd[m] for m in models], dtype=np.float64)
        self.willingness_to_pay, self.max_cost_usd = willingness_to_pay, max_cost_usd
        self.group = prompt_group(prompt)
        self.first = first
        self.calls: list[Call] = []
        self._readable = True  # whether the answers so far have an extractable answer (set as they are scored)

    @property
    def policy(self) -> CascadeRouting:
        """Cascade routing with the route's settings for the request's answer group as now known."""
        config = self.cascade.config
        return CascadeRouting(self.willingness_to_pay, max_cost_usd=self.max_cost_usd, max_calls=config.max_calls,
                              **config.settings(self.group))

    def next(self) -> str | None:
        """The next model to call, or None to stop."""
        if not self.calls:
            return self.first
        # a failed model is not tried again and does not count as a call; with none answered yet the policy
        # makes its first pick among the others (the fallback)
        answered = {self.models.index(c.model): c.trust for c in self.answered}
        tried = {c.model for c in self.calls}
        allowed = [m not in tried or self.models.index(m) in answered for m in self.models]
        spent = float(sum(self.expected[self.models.index(c.model)] for c in self.answered))
        column = next_model(self.policy, self.prior, self.expected, answered, spent, allowed, self._readable)
        return None if column is None else self.models[column]

    def add(self, call: Call) -> None:
        """Record a call; once it answered, every answer's trust is scored again (agreement changes them)."""
        self.calls.append(call)
        if call.text is not None:
            self._score()

    @property
    def answered(self) -> list[Call]:
        return [call for call in self.calls if call.trust is not None]

    @property
    def accepted(self) -> Call | None:
        """The answered call trusted most (the earlier one on ties), or None if none answered."""
        return max(self.answered, key=lambda call: call.trust, default=None)

    def _score(self) -> None:
        texts = {call.model: call.text for call in self.calls if call.text is not None}
        answers = Answers.from_responses([[texts.get(m) for m in self.models]], [self.prompt], [self.category])
        self._readable = answers.kinds[0] != "none"
        self.group = group_of(answers.kinds[0], answers.options[0])
        raw = np.nan_to_num(self.cascade.verifier.score(answers, self.prior[None, :], self.expected[None, :],
                                                        ~answers.missing)[0], nan=0.5)
        calibrated = self.cascade.calibration(raw)
        for call in self.calls:
            if call.text is not None:
                j = self.models.index(call.model)
                call.raw_trust, call.trust = float(raw[j]), float(calibrated[j])


class ServedCascade:
    """A cascade route's verifier and calibration, shared by its requests (see the module)."""

    def __init__(self, route: RouteConfig):
        assert route.cascade is not None
        self.route, self.config = route.name, route.cascade
        self.verifier: Verifier = (AgreementVerifier() if self.config.verifier == "agreement"
                                   else load_verifier(self.config.verifier))
        self.calibration = TrustCalibration()
        self._since_refit = 0
        self._lock = threading.Lock()

    def chain(self, models: list[str], prior: dict[str, float], expected_cost_usd: dict[str, float],
              objective: Objective, prompt: str, category: str | None, first: str,
              budget_willingness_to_pay: float | None = None, max_cost_usd: float | None = None) -> Chain:
        """A request's chain over ``models``; the tighter of the route's and the request's cost caps binds."""
        if objective.latency or not objective.quality:
            raise BadRequest(f"route {self.route!r} is a cascade: its objective must weigh quality and not latency, "
                             f"got {objective}", "crossroads.objective")
        wtp = willingness_to_pay(objective, list(expected_cost_usd.values()))
        if budget_willingness_to_pay is not None:
            wtp = max(wtp, budget_willingness_to_pay)
        caps = [cap for cap in (self.config.max_cost_usd, max_cost_usd) if cap is not None]
        return Chain(self, models, prior, expected_cost_usd, wtp, min(caps, default=None), prompt, category, first)

    def opening(self, prompt: str) -> float:
        """How many times the cost weighs in the first call's choice for ``prompt`` (its :func:`prompt_group`'s)."""
        return self.config.settings(prompt_group(prompt))["opening"]

    def first_ranking(self, ranking: list[str], prior: dict[str, float], expected_cost_usd: dict[str, float],
                      objective: Objective, prompt: str) -> list[str]:
        """The decision's ranking for a cascade: by ``prior - opening x willingness to pay x cost`` (with ``opening``
        1 the order of the route's reward), so that the decision's model is the policy's first call."""
        weight = self.opening(prompt) * willingness_to_pay(objective, list(expected_cost_usd.values()))
        return sorted(ranking, key=lambda m: -(prior[m] - weight * expected_cost_usd[m]))

    def learned(self, store: Any) -> bool:
        """Count a feedback on the route; every ``REFIT_EVERY`` of them, refit the calibration from the store."""
        with self._lock:
            self._since_refit += 1
            if self._since_refit < REFIT_EVERY:
                return False
            self._since_refit = 0
        self.refit(store)
        return True

    def refit(self, store: Any) -> None:
        """Fit the calibration on the latest ``CALIBRATION_WINDOW`` feedbacks of the route's decisions."""
        pairs = [(raw, quality) for raw, quality in store.cascade_feedback(self.route, CALIBRATION_WINDOW)
                 if raw is not None and quality is not None]
        self.calibration = TrustCalibration().fit([raw for raw, _ in pairs], [quality for _, quality in pairs])


def prompt_group(prompt: str) -> str | None:
    """A request's answer group before any answer: multiple choice when its prompt lists options, else not known."""
    options = listed_options(prompt)
    return group_of("choice", options) if options >= 2 else None


def _log_odds(trust: np.ndarray) -> np.ndarray:
    p = np.clip(trust, PRIOR_FLOOR, 1 - PRIOR_FLOOR)
    return np.log(p / (1 - p))
