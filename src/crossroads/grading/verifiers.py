"""Verifiers: how far to trust a model's answer once it is seen, for cascades.

A router decides from the prompt alone; a verifier reads the answer too.  Every verifier
maps the answers called so far for a query to ``trust``: P(this answer is good), one per
called model, in [0, 1].  All work on whole batches of queries at once, as
``(n_queries, n_models)`` arrays, so that a cascade can be replayed on thousands of
recorded queries and hundreds of operating points in seconds:

``prior``      the router's predicted quality of each model (what is known before any call)
``called``     which models have answered so far (boolean)
``answers``    what the verifier reads of each response (:class:`Answers`: the extracted
               answer, its length, whether it hedges)

By registry name (:data:`VERIFIERS`):

``agreement``  untrained: a Bayesian vote over the answers extracted so far (the scorers'
               extraction, :mod:`crossroads.grading.answers`), each model's accuracy taken
               from the router's prior.  With one answer, or none that can be extracted (code,
               prose), it abstains and returns the prior.
``learned``    logistic regression from cheap features (the prior, the agreement posterior,
               agreeing and disagreeing answers, whether an answer was extracted, the
               response's length, hedging words, the model's price relative to the pool)
               to the recorded quality; saved as ``.npz`` without pickle.
``judge``      an LLM judge (:class:`crossroads.grading.judge.LLMJudge`) rating each answer
               (self-verification when the judge is the answering model); for serving, not
               for replay on thousands of queries.

>>> import numpy as np
>>> answers = Answers.from_responses([["B", "B", "C"]], ["Pick one\\nA) x\\nB) y\\nC) z\\nD) w"], ["quiz"])
>>> prior = np.array([[0.6, 0.6, 0.6]])
>>> trust = AgreementVerifier().score(answers, prior, np.ones((1, 3)), np.array([[True, True, False]]))
>>> round(float(trust[0, 0]), 3), bool(np.isnan(trust[0, 2]))  # two agreeing answers at 60% each: 92%
(0.871, True)
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from crossroads.errors import CrossroadsError
from crossroads.grading.answers import extract_choice, extract_final_number
from crossroads.registry import Registry

FORMAT_VERSION = 1
#: Answer kinds: a multiple-choice letter, a final number, or nothing extractable (code, prose).
KINDS = ("choice", "number", "none")
#: A category's responses are multiple choice when at least this share of them name a letter.
CHOICE_SHARE = 0.5
#: ... and numeric when this share ends in a number and almost none hold code.
NUMBER_SHARE = 0.9
#: Distinct numbers a wrong answer could take, for the agreement vote (chance agreement is rare).
NUMBER_OPTIONS = 1000
#: Options of a multiple-choice question whose prompt does not list them.
DEFAULT_OPTIONS = 4
#: Priors are kept inside (PRIOR_FLOOR, 1 - PRIOR_FLOOR) so that no vote is certain.
PRIOR_FLOOR = 0.02
HEDGES = re.compile(
    r"\b(not sure|unsure|cannot (?:be )?determined?|can't (?:be )?determined?|unclear|impossible to (?:say|determine|know)"
    r"|i don't know|i do not know|as an ai|none of the (?:above|options|choices)|no correct answer|ambiguous"
    r"|i apologi[sz]e|more (?:context|information) (?:is )?needed)\b", re.IGNORECASE)
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[).:]\s", re.MULTILINE)


# -- what a verifier reads of the responses -------------------------------------------------
@dataclass
class Answers:
    """The extracted answer and simple facts about each recorded response, per query x model.

    ``codes`` holds the extracted answer as a number (a choice letter's index, or the final
    number), NaN where none was extracted; ``options`` the number of possible answers of each
    query (the vote's chance of agreeing by accident); ``kinds`` each query's answer kind
    (one of :data:`KINDS`); ``length_chars``, ``hedged`` and ``missing`` (no response text).
    """

    codes: np.ndarray
    options: np.ndarray
    kinds: list[str]
    length_chars: np.ndarray
    hedged: np.ndarray
    missing: np.ndarray

    @classmethod
    def from_responses(cls, responses: Sequence[Sequence[str | None]], prompts: Sequence[str],
                       categories: Sequence[str | None], kinds: dict[str, str] | None = None) -> Answers:
        """Read ``responses[i][j]`` (None: no text).  ``kinds`` maps a category to its answer kind;
        categories it lacks get :func:`answer_kinds` of these responses."""
        n = len(responses)
        m = len(responses[0]) if n else 0
        if len(prompts) != n or len(categories) != n:
            raise CrossroadsError(f"{n} rows of responses, {len(prompts)} prompts and {len(categories)} categories")
        found = answer_kinds(responses, categories)
        found.update(kinds or {})
        per_query = [found.get(str(category), "none") for category in categories]
        codes = np.full((n, m), np.nan)
        length = np.zeros((n, m))
        hedged = np.zeros((n, m), dtype=bool)
        missing = np.ones((n, m), dtype=bool)
        options = np.ones(n)
        for i, (row, kind) in enumerate(zip(responses, per_query)):
            if kind == "choice":
                listed = listed_options(prompts[i])
                options[i] = listed if listed >= 2 else DEFAULT_OPTIONS
            elif kind == "number":
                options[i] = NUMBER_OPTIONS
            for j, text in enumerate(row):
                if text is None:
                    continue
                missing[i, j] = False
                length[i, j] = len(text)
                hedged[i, j] = HEDGES.search(text) is not None
                codes[i, j] = _code(text, kind)
        return cls(codes, options, per_query, length, hedged, missing)

    @classmethod
    def from_dataset(cls, dataset, kinds: dict[str, str] | None = None) -> Answers:
        """The answers of a :class:`~crossroads.data.dataset.RoutingDataset` (all missing if it keeps no responses)."""
        responses = dataset.responses or [[None] * dataset.n_models for _ in range(dataset.n_queries)]
        return cls.from_responses(responses, dataset.prompts, dataset.categories, kinds)

    def subset(self, rows: np.ndarray) -> Answers:
        rows = np.arange(len(self.kinds))[np.asarray(rows)]
        return replace(self, codes=self.codes[rows], options=self.options[rows],
                       kinds=[self.kinds[i] for i in rows], length_chars=self.length_chars[rows],
                       hedged=self.hedged[rows], missing=self.missing[rows])

    @property
    def extracted(self) -> np.ndarray:
        return ~np.isnan(self.codes)


def listed_options(prompt: str) -> int:
    """How many lettered options (``A)``, ``(B)``, ``C.`` at the start of a line) ``prompt`` lists."""
    return len(set(_OPTION_LINE.findall(prompt)))


def answer_kinds(responses: Sequence[Sequence[str | None]], categories: Sequence[str | None]) -> dict[str, str]:
    """Each category's answer kind, read from its responses.

    ``choice`` when at least :data:`CHOICE_SHARE` of them name an option letter; ``number``
    when :data:`NUMBER_SHARE` end in a number and under 10% hold code (a code fence or
    ``def``); else ``none`` (MBPP's code, open-ended prose): agreement is not checked there.
    """
    texts: dict[str, list[str]] = {}
    for row, category in zip(responses, categories):
        texts.setdefault(str(category), []).extend(text for text in row if text is not None)
    kinds = {}
    for category, found in texts.items():
        sample = found[:: max(1, len(found) // 400)]  # a few hundred responses tell the kind
        if not sample:
            kinds[category] = "none"
        elif np.mean([extract_choice(text) is not None for text in sample]) >= CHOICE_SHARE:
            kinds[category] = "choice"
        elif (np.mean([extract_final_number(text) is not None for text in sample]) >= NUMBER_SHARE
              and np.mean(["```" in text or "def " in text for text in sample]) < 0.1):
            kinds[category] = "number"
        else:
            kinds[category] = "none"
    return kinds


def _code(text: str, kind: str) -> float:
    if kind == "choice":
        letter = extract_choice(text)
        return float("nan") if letter is None else float(ord(letter) - ord("A"))
    if kind == "number":
        number = extract_final_number(text)
        return float("nan") if number is None else round(number, 6)
    return float("nan")


# -- the vote ---------------------------------------------------------------------------------
def agreement_posterior(answers: Answers, prior: np.ndarray, called: np.ndarray) -> np.ndarray:
    """P(answer j is right) from the extracted answers of the called models (Dawid-Skene with one voter each).

    Each called model k is right with probability ``prior[k]`` and otherwise gives one of the
    query's other ``options - 1`` answers at random.  The posterior of each candidate answer
    (the distinct answers seen, and one unseen) is the product of these likelihoods over the
    voters, normalised.  With a single answer it equals that model's prior.  Models without
    an extracted answer abstain: their cell is their prior.  Cells not called are NaN.
    """
    p = np.clip(np.asarray(prior, dtype=np.float64), PRIOR_FLOOR, 1 - PRIOR_FLOOR)
    called = np.asarray(called, dtype=bool)
    voting = called & answers.extracted
    wrong_options = np.maximum(answers.options - 1, 1)[:, None]
    log_right, log_wrong = np.log(p), np.log((1 - p) / wrong_options)
    same = answers.codes[:, :, None] == answers.codes[:, None, :]  # NaN never equals
    votes = voting[:, None, :]
    log_like = np.where(votes & same, log_right[:, None, :], 0.0).sum(2) + np.where(
        votes & ~same, log_wrong[:, None, :], 0.0).sum(2)
    log_unseen = np.where(voting, log_wrong, 0.0).sum(1)
    top = np.maximum(np.where(voting, log_like, -np.inf).max(1), log_unseen)
    sharing = np.maximum((votes & same).sum(2), 1)
    distinct = np.where(voting, 1.0 / sharing, 0.0).sum(1)
    like = np.where(voting, np.exp(log_like - top[:, None]), 0.0)
    total = (like / sharing).sum(1) + np.maximum(answers.options - distinct, 0.0) * np.exp(log_unseen - top)
    posterior = like / total[:, None]
    return np.where(voting, posterior, np.where(called, p, np.nan))


# -- verifiers ----------------------------------------------------------------------------------
class Verifier(ABC):
    """Trust in each called model's answer, given the router's prior and the answers seen so far.

    ``score`` checks shapes and returns ``(n_queries, n_models)`` values in [0, 1] for the
    called cells and NaN elsewhere; subclasses implement ``_score``.  Verifiers that learn
    implement ``fit`` and ``_state``/``_restore``; ``save``/:func:`load_verifier` write and
    read them as ``.npz`` with a JSON header, never pickle.
    """

    name: str = "verifier"

    def fit(self, answers: Answers, prior: np.ndarray, expected_cost_usd: np.ndarray, quality: np.ndarray,
            *, seed: int = 0) -> Verifier:
        """Learn from recorded outcomes (a no-op for verifiers that do not learn)."""
        return self

    def score(self, answers: Answers, prior: np.ndarray, expected_cost_usd: np.ndarray,
              called: np.ndarray) -> np.ndarray:
        prior = np.asarray(prior, dtype=np.float64)
        called = np.asarray(called, dtype=bool)
        cost = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), prior.shape)
        if prior.shape != answers.codes.shape or called.shape != prior.shape:
            raise CrossroadsError(f"the verifier needs prior {prior.shape}, called {called.shape} and answers "
                                  f"{answers.codes.shape} of one shape (n_queries, n_models)")
        trust = np.clip(self._score(answers, prior, cost, called), 0.0, 1.0)
        return np.where(called, trust, np.nan)

    @abstractmethod
    def _score(self, answers: Answers, prior: np.ndarray, expected_cost_usd: np.ndarray,
               called: np.ndarray) -> np.ndarray: ...

    def get_params(self) -> dict[str, Any]:
        return {}

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        header = {"format_version": FORMAT_VERSION, "verifier": self.name, "params": self.get_params()}
        with path.open("wb") as handle:
            np.savez_compressed(handle, __header__=np.array(json.dumps(header)), **self._state())
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"


class AgreementVerifier(Verifier):
    """The vote of :func:`agreement_posterior`: untrained, abstains (returns the prior) where nothing is extracted."""

    name = "agreement"

    def _score(self, answers, prior, expected_cost_usd, called):
        return agreement_posterior(answers, prior, called)


#: The learned verifier's features, in column order.
FEATURES = ("logit_prior", "logit_agreement", "extracted", "agreeing", "disagreeing", "log_length", "hedged",
            "missing", "log_relative_price", "choice", "number", "agreement_x_voters")


def features(answers: Answers, prior: np.ndarray, expected_cost_usd: np.ndarray, called: np.ndarray) -> np.ndarray:
    """``(n_queries, n_models, len(FEATURES))``: what the learned verifier reads of each called answer."""
    p = np.clip(prior, PRIOR_FLOOR, 1 - PRIOR_FLOOR)
    voting = called & answers.extracted
    same = answers.codes[:, :, None] == answers.codes[:, None, :]
    others = voting[:, None, :] & ~np.eye(len(p[0]), dtype=bool)[None]
    agreeing = (others & same).sum(2)
    disagreeing = (others & ~same).sum(2) * answers.extracted
    posterior = np.clip(np.nan_to_num(agreement_posterior(answers, prior, called), nan=0.5), 1e-4, 1 - 1e-4)
    cost = np.maximum(expected_cost_usd, 1e-12)
    relative = np.log(cost) - np.log(cost).mean(1, keepdims=True)
    kinds = np.array(answers.kinds)
    logit_post = np.log(posterior / (1 - posterior))
    columns = [np.log(p / (1 - p)), logit_post, answers.extracted, agreeing, disagreeing,
               np.log1p(answers.length_chars), answers.hedged, answers.missing, relative,
               np.broadcast_to((kinds == "choice")[:, None], p.shape), np.broadcast_to((kinds == "number")[:, None], p.shape),
               logit_post * (agreeing + disagreeing > 0)]
    return np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=-1)


class LearnedVerifier(Verifier):
    """Logistic regression (L2 strength ``alpha``) from :data:`FEATURES` to the recorded quality.

    Training examples come from replayed cascade states: for each training query,
    ``contexts`` sets of called models, each the top 1-4 models of a router sweeping a random
    willingness to pay (the sets a cascade actually reaches), every member an example with
    its agreement counted against the others.  Recorded qualities in [0, 1] are soft labels.
    The prior must come from a router that did not train on these queries (nested
    cross-validation), or the verifier learns to trust an overfitted prior.
    """

    name = "learned"

    def __init__(self, alpha: float = 1.0, contexts: int = 4, iterations: int = 25):
        if not alpha >= 0 or contexts < 1 or iterations < 1:
            raise CrossroadsError(f"learned verifier: need alpha >= 0, contexts >= 1, iterations >= 1; got "
                                  f"{alpha}, {contexts}, {iterations}")
        self.alpha = alpha
        self.contexts = contexts
        self.iterations = iterations

    def get_params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "contexts": self.contexts, "iterations": self.iterations}

    def fit(self, answers, prior, expected_cost_usd, quality, *, seed: int = 0) -> LearnedVerifier:
        prior = np.asarray(prior, dtype=np.float64)
        cost = np.broadcast_to(np.asarray(expected_cost_usd, dtype=np.float64), prior.shape)
        quality = np.asarray(quality, dtype=np.float64)
        rng = np.random.default_rng(seed)
        n, m = prior.shape
        xs, ys = [], []
        scale = np.median(cost) or 1.0
        for _ in range(self.contexts):
            wtp = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n))[:, None] / scale
            ranking = np.argsort(-(prior - wtp * cost + 1e-9 * rng.random((n, m))), axis=1)
            size = rng.integers(1, min(4, m) + 1, n)
            called = np.zeros((n, m), dtype=bool)
            for k in range(min(4, m)):
                rows = np.flatnonzero(size > k)
                called[rows, ranking[rows, k]] = True
            called &= ~np.isnan(quality)
            xs.append(features(answers, prior, cost, called)[called])
            ys.append(quality[called])
        x, y = np.concatenate(xs), np.clip(np.concatenate(ys), 0.0, 1.0)
        if len(y) == 0:
            raise CrossroadsError("the learned verifier found no recorded outcome to learn from")
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-9
        self.coef_ = fit_logistic(((x - self.mean_) / self.scale_), y, self.alpha, self.iterations)
        return self

    def _score(self, answers, prior, expected_cost_usd, called):
        if not hasattr(self, "coef_"):
            raise CrossroadsError("the learned verifier is not fitted: call fit() or load a saved verifier")
        x = (features(answers, prior, expected_cost_usd, called) - self.mean_) / self.scale_
        return 1.0 / (1.0 + np.exp(-(x @ self.coef_[1:] + self.coef_[0])))

    def _state(self):
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_}

    def _restore(self, arrays):
        self.mean_, self.scale_, self.coef_ = arrays["mean"], arrays["scale"], arrays["coef"]


def fit_logistic(x: np.ndarray, y: np.ndarray, alpha: float, iterations: int,
                 offset: np.ndarray | float = 0.0, intercept_alpha: float = 0.0) -> np.ndarray:
    """Intercept and weights of an L2-penalised logistic regression (Newton's method; soft labels allowed).

    ``offset`` is added to every example's log-odds (fixed, not fitted): the weights then fit departures from it;
    ``intercept_alpha`` penalises the intercept too (0: free).
    """
    design = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(design.shape[1])
    penalty = alpha * np.eye(len(w))
    penalty[0, 0] = intercept_alpha
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ w + offset)))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + penalty + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


class JudgeVerifier(Verifier):
    """An LLM judge's rating of each called answer, ``(rating - 1) / 9`` (:class:`~crossroads.grading.judge.LLMJudge`).

    ``questions`` and ``responses`` (per query x model) are what the judge reads; a
    rating depends on one answer only, so each is asked once and kept.  Where the judge
    gives no rating the verifier returns the prior.  Pass ``http_client`` for tests.
    """

    name = "judge"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", **options: Any):
        from crossroads.grading.judge import LLMJudge

        self.base_url, self.model, self.api_key_env, self.options = base_url, model, api_key_env, options
        self.judge = LLMJudge(base_url, model, api_key_env, **options)
        self.questions: Sequence[str] = []
        self.responses: Sequence[Sequence[str | None]] = []
        self._ratings: dict[tuple[int, int], float] = {}

    def get_params(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}

    def read(self, questions: Sequence[str], responses: Sequence[Sequence[str | None]]) -> JudgeVerifier:
        """The texts the judge will read (rows as in the ``Answers`` scored next)."""
        self.questions, self.responses, self._ratings = questions, responses, {}
        return self

    def _score(self, answers, prior, expected_cost_usd, called):
        trust = np.array(prior, dtype=np.float64)
        for i, j in zip(*np.nonzero(called)):
            text = self.responses[i][j] if i < len(self.responses) else None
            if text is None:
                continue
            if (i, j) not in self._ratings:
                try:
                    self._ratings[i, j] = self.judge.score(text, question=self.questions[i])
                except CrossroadsError:
                    self._ratings[i, j] = float("nan")
            if not np.isnan(self._ratings[i, j]):
                trust[i, j] = self._ratings[i, j]
        return trust


#: The verifiers by name.
VERIFIERS = Registry(
    "verifier",
    {"agreement": "crossroads.grading.verifiers:AgreementVerifier",
     "learned": "crossroads.grading.verifiers:LearnedVerifier",
     "judge": "crossroads.grading.verifiers:JudgeVerifier"},
    {"agreement": "vote of the extracted answers, accuracies from the router's prior (untrained)",
     "learned": "logistic regression on the prior, agreement, length, hedging and price",
     "judge": "an LLM judge's 1-10 rating (self-verification)"},
)


def load_verifier(path: str | Path) -> Verifier:
    """A verifier written by ``Verifier.save``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["__header__"]))
            arrays = {key: data[key] for key in data.files if key != "__header__"}
    except FileNotFoundError:
        raise CrossroadsError(f"{path}: no such verifier file") from None
    except Exception as exc:  # noqa: BLE001 - zip, json or key errors all mean the same to the user
        raise CrossroadsError(f"{path}: not a crossroads verifier file or corrupt ({exc})") from None
    if not isinstance(header, dict) or header.get("format_version") != FORMAT_VERSION or "verifier" not in header:
        raise CrossroadsError(f"{path}: not a crossroads verifier file (format {FORMAT_VERSION})")
    verifier = VERIFIERS.build(header["verifier"], **header["params"])
    verifier._restore(arrays)
    return verifier


def kind_counts(answers: Answers) -> dict[str, int]:
    """How many queries have each answer kind."""
    return dict(Counter(answers.kinds))
