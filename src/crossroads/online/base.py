"""The online learner interface: choose one model per request, learn from its reward.

``Learner.select`` does the shared work (checks the candidates and the context, adds
models seen for the first time, keeps a converged session on its model) and then calls
the policy's hook ``_select``, which returns the chosen model with the whole
distribution it was drawn from; ``Learner.update`` checks the reward and calls
``_update``.  The candidate models are passed on every call, so a caller can restrict
them per request (a model that is down, over budget or not allowed for this user).

Hyper-parameters are keyword arguments of ``__init__`` stored verbatim; learned state
lives in attributes ending with ``_`` and round-trips through plain JSON
(:meth:`Learner.state` / :meth:`Learner.from_state`), random generator included, so a
restored learner makes exactly the decisions the original would have made.  One lock
per learner serialises ``select``, ``update`` and the pool changes, so concurrent
requests never lose an update.
"""

from __future__ import annotations

import base64
import inspect
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from crossroads.checks import check_fraction
from crossroads.errors import CrossroadsError, UnknownModelError

STATE_VERSION = 1


@dataclass(frozen=True)
class Decision:
    """What a learner decided for one request.

    ``probabilities`` is the chance the learner had of choosing each of ``candidates``
    (they sum to 1) and ``probability`` the one of ``model``: the propensity that
    off-policy evaluation needs, and what a caller mixing in its own exploration needs
    to log the exact probability of the model that answers.  Both are exact for every
    learner except the Thompson samplers, which estimate them (see their docs).
    ``scores`` are the per-candidate values the policy compared, when it compared any.
    ``context`` and ``prior`` are kept so that ``update(decision, reward)`` needs no second copy.
    """

    model: str
    probability: float
    learner: str
    candidates: tuple[str, ...]
    scores: dict[str, float] | None = None
    probabilities: dict[str, float] | None = None
    step: int = 0
    converged: bool = False
    context: np.ndarray | None = field(default=None, repr=False, compare=False)
    prior: dict[str, float] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able record of the decision (without the context vector)."""
        return {
            "model": self.model,
            "probability": self.probability,
            "learner": self.learner,
            "candidates": list(self.candidates),
            "scores": self.scores,
            "probabilities": self.probabilities,
            "step": self.step,
            "converged": self.converged,
        }


class Learner(ABC):
    """Chooses one model among the candidates of each request and learns from rewards.

    Subclasses implement ``_new_arm`` (initial statistics of a model joining the pool),
    ``_select`` and ``_update``; they may override ``_on_remove`` and ``_converged``.
    """

    name: ClassVar[str]
    #: True for learners that read the prompt embedding passed as ``context``.
    contextual: ClassVar[bool] = False
    #: Rewards outside this interval are rejected; None accepts any finite reward.
    reward_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    #: True for learners that start each decision from a prior: the reward the caller
    #: expects of each candidate (an offline router's prediction), passed as ``prior``.
    takes_prior: ClassVar[bool] = False
    #: Learners with a convergence rule set this from their ``sticky`` argument.
    sticky: bool = False

    arms_: dict[str, dict[str, Any]]
    stats_: dict[str, Any]

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self.arms_ = {}  # per-model statistics; every entry also counts its rewards in "pulls"
        self.stats_ = self._new_stats()  # learner-wide statistics
        self.steps_ = 0  # selections made
        self.updates_ = 0  # rewards received
        self.converged_model_: str | None = None
        self.converged_step_: int | None = None
        self.rng_ = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._call_prior: dict[str, float] | None = None  # the prior of the call in progress (under the lock)

    # -- public API -------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        """The pool: every model added or seen so far, in order of arrival."""
        return list(self.arms_)

    @property
    def converged_model(self) -> str | None:
        """The model this session converged to, or None."""
        return self.converged_model_

    @property
    def converged_step(self) -> int | None:
        """How many selections had been made when the session converged, or None."""
        return self.converged_step_

    def select(
        self, candidates: Sequence[str], context: np.ndarray | None = None, rng: np.random.Generator | None = None,
        prior: Mapping[str, float] | None = None,
    ) -> Decision:
        """Choose one of ``candidates``; models never seen before join the pool first.

        ``context`` is the prompt embedding (required by contextual learners, ignored by
        the others).  ``rng`` replaces the learner's own random generator for this call.
        ``prior`` (learners with ``takes_prior``) is the reward expected of each candidate.
        Once a sticky learner has converged, it returns its model with probability 1
        whenever that model is among the candidates.
        """
        candidates = _check_candidates(candidates)
        prior = self._check_prior(prior)
        with self._lock:
            x = self._check_context(context)
            self._call_prior = prior
            for model in candidates:
                if model not in self.arms_:
                    self._add(model)
            step = self.steps_
            converged = self.sticky and self.converged_model_ in candidates
            if converged:
                model, probabilities, scores = self.converged_model_, {self.converged_model_: 1.0}, None
            else:
                model, probabilities, scores = self._select(candidates, x, self.rng_ if rng is None else rng)
            self.steps_ += 1
            self._check_convergence()
        probabilities = {m: float(probabilities.get(m, 0.0)) for m in candidates}
        return Decision(
            model=model,
            probability=probabilities[model],
            learner=self.name,
            candidates=tuple(candidates),
            scores=scores,
            probabilities=probabilities,
            step=step,
            converged=converged,
            context=None if context is None else np.array(context, dtype=np.float64),
            prior=prior,
        )

    def update(self, decision: Decision | str, reward: float, context: np.ndarray | None = None,
               prior: Mapping[str, float] | None = None) -> None:
        """Learn that the model of ``decision`` (or the named model) earned ``reward``.

        Contextual learners take the context, and learners that take priors the prior, from
        the decision unless ``context`` or ``prior`` is given.
        """
        if isinstance(decision, Decision):
            if decision.learner != self.name:
                raise CrossroadsError(f"this decision was made by the {decision.learner} learner, not by {self.name}")
            model = decision.model
            context = decision.context if context is None else context
            prior = decision.prior if prior is None else prior
        elif isinstance(decision, str):
            model = decision
        else:
            raise CrossroadsError(f"update() takes a Decision or a model name, got {type(decision).__name__}")
        reward = self._check_reward(reward)
        prior = self._check_prior(prior)
        with self._lock:
            if model not in self.arms_:
                raise UnknownModelError(model, list(self.arms_))
            x = self._check_context(context)
            self._call_prior = prior
            self._update(model, reward, x)
            self.arms_[model]["pulls"] += 1
            self.updates_ += 1
            self._check_convergence()

    def add_model(self, name: str) -> None:
        """Add ``name`` to the pool (nothing happens if it is already there)."""
        _check_candidates([name])
        with self._lock:
            if name not in self.arms_:
                self._add(name)

    def remove_model(self, name: str) -> None:
        """Remove ``name`` and its statistics; a session converged to it starts learning again."""
        with self._lock:
            if name not in self.arms_:
                raise UnknownModelError(name, list(self.arms_))
            del self.arms_[name]
            self._on_remove(name)
            if self.converged_model_ == name:
                self.converged_model_ = self.converged_step_ = None

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes they were stored in."""
        signature = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in signature.parameters if p != "self"}

    def state(self) -> dict[str, Any]:
        """Everything the learner knows, as plain JSON types (arrays as base64 float64)."""
        with self._lock:
            return {
                "learner": self.name,
                "version": STATE_VERSION,
                "params": self.get_params(),
                "arms": _encode(self.arms_),
                "stats": _encode(self.stats_),
                "steps": self.steps_,
                "updates": self.updates_,
                "converged_model": self.converged_model_,
                "converged_step": self.converged_step_,
                "rng": self.rng_.bit_generator.state,
            }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Learner:
        """The learner that wrote ``state``; ``Learner.from_state`` picks the class by name."""
        if not isinstance(state, dict) or "learner" not in state:
            raise CrossroadsError("not a learner state: expected the dict written by Learner.state()")
        if cls is Learner:
            from crossroads.online import LEARNERS

            return LEARNERS.load(state["learner"]).from_state(state)
        if state["learner"] != cls.name:
            raise CrossroadsError(f"this state is of the {state['learner']} learner, not {cls.name}")
        if state.get("version") != STATE_VERSION:
            raise CrossroadsError(
                f"learner state version {state.get('version')!r}, this crossroads reads {STATE_VERSION}"
            )
        learner = cls(**state["params"])
        learner.arms_ = _decode(state["arms"])
        learner.stats_ = _decode(state["stats"])
        learner.steps_ = state["steps"]
        learner.updates_ = state["updates"]
        learner.converged_model_ = state["converged_model"]
        learner.converged_step_ = state["converged_step"]
        bit_generator = getattr(np.random, state["rng"]["bit_generator"])()
        bit_generator.state = state["rng"]
        learner.rng_ = np.random.Generator(bit_generator)
        return learner

    def clone(self) -> Learner:
        """An independent copy with the same state."""
        return type(self).from_state(self.state())

    # -- hooks ------------------------------------------------------------------
    def _new_stats(self) -> dict[str, Any]:
        """Initial learner-wide statistics."""
        return {}

    @abstractmethod
    def _new_arm(self, model: str) -> dict[str, Any]:
        """Initial statistics of a model joining the pool (the others are in ``arms_``)."""

    @abstractmethod
    def _select(
        self, candidates: list[str], context: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[str, dict[str, float], dict[str, float] | None]:
        """(model, each candidate's probability of being chosen, per-candidate scores or None).

        The probabilities are those of the draw just made, from the learner's state before
        it; candidates left out have probability 0.  The decision's ``probability`` is the
        chosen model's entry.
        """

    @abstractmethod
    def _update(self, model: str, reward: float, context: np.ndarray | None) -> None: ...

    def _on_remove(self, model: str) -> None:
        """Called after ``model``'s statistics were deleted."""

    def _converged(self) -> str | None:
        """The model the session has converged to, or None (learners without such a rule)."""
        return None

    def _check_context(self, context: np.ndarray | None) -> np.ndarray | None:
        """Contextual learners validate and return the context; the others ignore it."""
        return None

    # -- shared work ------------------------------------------------------------
    def _add(self, model: str) -> None:
        arm = self._new_arm(model)
        arm["pulls"] = 0
        self.arms_[model] = arm

    def _check_prior(self, prior: Mapping[str, float] | None) -> dict[str, float] | None:
        if prior is None:
            return None
        if not self.takes_prior:
            raise CrossroadsError(f"the {self.name} learner does not start from a prior; linucb and lints do")
        if not isinstance(prior, Mapping) or not prior:
            raise CrossroadsError(f"a prior maps each candidate model to its expected reward, got {prior!r}")
        checked = {}
        for model, value in prior.items():
            if not isinstance(model, str) or isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not math.isfinite(value):
                raise CrossroadsError(f"prior entries must be model name -> finite number, got {model!r}: {value!r}")
            checked[model] = float(value)
        return checked

    def _check_reward(self, reward: float) -> float:
        try:
            reward = float(reward)
        except (TypeError, ValueError):
            raise CrossroadsError(f"reward must be a number, got {reward!r}") from None
        if not math.isfinite(reward):
            raise CrossroadsError(f"reward must be finite, got {reward}")
        if self.reward_range is not None:
            low, high = self.reward_range
            if not low <= reward <= high:
                raise CrossroadsError(
                    f"the {self.name} learner takes rewards in [{low:g}, {high:g}], got {reward}: "
                    "rescale the reward (for example with the objective's weights)"
                )
        return reward

    def _check_convergence(self) -> None:
        if self.converged_model_ is None:
            model = self._converged()
            if model is not None:
                self.converged_model_, self.converged_step_ = model, self.steps_

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


class CountingLearner(Learner):
    """A learner whose per-model statistics are a count ``n`` and a reward sum ``s``.

    ``discount`` (gamma < 1) multiplies every model's ``n`` and ``s`` by gamma at each
    reward, so that an observation ``t`` rewards old weighs gamma**t (discounted UCB,
    Garivier & Moulines 2011); ``window`` keeps only the last ``window`` rewards
    (sliding-window UCB).  Either lets the learner follow a model whose quality, price
    or latency drifts; the default (neither) weighs all rewards equally.
    """

    def __init__(self, discount: float = 1.0, window: int | None = None, seed: int | None = None):
        check_fraction(discount, "discount", low_open=True)
        if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
            raise CrossroadsError(f"window must be a positive number of rewards or None, got {window!r}")
        if window is not None and discount < 1.0:
            raise CrossroadsError("choose discount or window to forget old rewards, not both")
        self.discount = discount
        self.window = window
        super().__init__(seed=seed)

    def _new_stats(self) -> dict[str, Any]:
        return {"history": []} if self.window is not None else {}

    def _new_arm(self, model: str) -> dict[str, Any]:
        return {"n": 0.0, "s": 0.0}

    def _update(self, model: str, reward: float, context: np.ndarray | None) -> None:
        if self.discount < 1.0:
            for arm in self.arms_.values():
                arm["n"] *= self.discount
                arm["s"] *= self.discount
        arm = self.arms_[model]
        arm["n"] += 1.0
        arm["s"] += reward
        if self.window is not None:
            history = self.stats_["history"]
            history.append([model, reward])
            if len(history) > self.window:
                old_model, old_reward = history.pop(0)
                old = self.arms_[old_model]
                old["n"] -= 1.0
                # subtraction leaves rounding residue; keep 0 <= s <= n exact at the ends
                old["s"] = 0.0 if old["n"] <= 0.0 else min(max(old["s"] - old_reward, 0.0), old["n"])
                old["n"] = max(old["n"], 0.0)

    def _on_remove(self, model: str) -> None:
        if self.window is not None:
            self.stats_["history"] = [entry for entry in self.stats_["history"] if entry[0] != model]


# -- helpers for the policies ----------------------------------------------------
def argmax_ties(values: Sequence[float], rng: np.random.Generator) -> tuple[int, list[int]]:
    """(index of a maximum, the indices of every value that ties for it); ties are broken at random."""
    best = max(values)
    ties = [i for i, v in enumerate(values) if v == best]
    if len(ties) == 1:
        return ties[0], ties
    return ties[int(rng.integers(len(ties)))], ties


def uniform_over(candidates: Sequence[str], chosen: Sequence[int]) -> dict[str, float]:
    """Probability ``1/t`` for each of the ``t`` candidates at the indices ``chosen`` (left out: probability 0)."""
    share = 1.0 / len(chosen)
    return {candidates[i]: share for i in chosen}


def _check_candidates(candidates: Sequence[str]) -> list[str]:
    if isinstance(candidates, str):
        raise CrossroadsError(f"candidates must be a list of model names, got the string {candidates!r}")
    candidates = list(candidates)
    if not candidates:
        raise CrossroadsError("no candidate models: pass at least one model name to choose from")
    for model in candidates:
        if not isinstance(model, str) or not model:
            raise CrossroadsError(f"model names must be non-empty strings, got {model!r}")
    if len(set(candidates)) != len(candidates):
        raise CrossroadsError(f"candidate models are repeated: {candidates}")
    return candidates


def _encode(value: Any) -> Any:
    """Copy of ``value`` with numpy arrays as ``{"ndarray": base64 float64, "shape": [...]}``."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value, dtype="<f8")
        return {"ndarray": base64.b64encode(data.tobytes()).decode("ascii"), "shape": list(data.shape)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"ndarray", "shape"}:
            data = np.frombuffer(base64.b64decode(value["ndarray"]), dtype="<f8")
            return data.reshape(value["shape"]).astype(np.float64)  # a writable, native copy
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
