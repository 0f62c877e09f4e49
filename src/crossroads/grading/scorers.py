"""Scorers turn a model's response into a quality in [0, 1].

PickLLM (Sikeridis et al., arXiv 2412.12170) rewards a model by the accuracy of
its answer as judged by a "customizable scoring function"; these are such functions.
Each scorer compares a ``response`` with a ``reference`` (the expected answer) and,
for the LLM judge, the ``question``.  By their registry names (``make_scorer(name, **options)``):

``choice``      multiple-choice letter match (:mod:`crossroads.grading.answers`)
``number``      GSM8K-style final-number match
``exact``       SQuAD-style normalised exact match
``embedding``   cosine similarity of response and reference embeddings (:mod:`crossroads.grading.similarity`)
``judge``       a 1-10 rating from any OpenAI-compatible chat model (:mod:`crossroads.grading.judge`)

``CallableScorer`` makes any user function a scorer (e.g. a toxicity check);
``penalised`` subtracts penalties.  Nothing heavy is imported until a scorer is used.

>>> make_scorer("exact")("The Eiffel Tower!", "eiffel tower")
1.0
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from crossroads.errors import CrossroadsError
from crossroads.registry import Registry

if TYPE_CHECKING:
    import numpy as np


# -- the interface ---------------------------------------------------------------------
class Scorer(ABC):
    """Scores one response against a reference: ``scorer(response, reference, question=...)``.

    ``score`` checks its inputs and that the result lies in [0, 1], then calls the
    ``_score`` hook.  A missing response (None) is an error, never a zero: the caller
    decides what a missing outcome means.
    """

    name: str = "scorer"
    #: False for scorers that judge a response on its own (e.g. a toxicity check).
    needs_reference: bool = True

    def score(self, response: str, reference: str | None = None, *, question: str | None = None) -> float:
        """The quality of ``response`` in [0, 1]."""
        if not isinstance(response, str):
            raise CrossroadsError(
                f"scorer {self.name!r} needs the response as text, got {type(response).__name__}; "
                "a missing response is a missing outcome, not a score"
            )
        if self.needs_reference and reference is None:
            raise CrossroadsError(f"scorer {self.name!r} needs a reference answer to compare the response with")
        value = float(self._score(response, reference, question))
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise CrossroadsError(f"scorer {self.name!r} returned {value!r}; a quality must lie in [0, 1]")
        return value

    __call__ = score

    def score_many(
        self,
        responses: Sequence[str],
        references: Sequence[str | None] | None = None,
        questions: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """``score`` over aligned lists; returns a float64 array."""
        import numpy as np

        n = len(responses)
        references = [None] * n if references is None else list(references)
        questions = [None] * n if questions is None else list(questions)
        if len(references) != n or len(questions) != n:
            raise CrossroadsError(
                f"score_many got {n} responses, {len(references)} references and {len(questions)} questions"
            )
        return np.array(
            [self.score(r, ref, question=q) for r, ref, q in zip(responses, references, questions)], dtype=np.float64
        )

    @abstractmethod
    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        """The quality of a validated ``response``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class CallableScorer(Scorer):
    """A plain function as a scorer: ``fn(response, reference, **options) -> float in [0, 1]``.

    If ``fn`` has a ``question`` parameter it also receives the question.  With
    ``needs_reference=False``, ``fn`` may be called with ``reference=None``.

    >>> scorer = CallableScorer(lambda response, reference: float(len(response) <= 20), name="short", needs_reference=False)
    >>> scorer("tiny answer"), scorer.name
    (1.0, 'short')
    """

    def __init__(
        self, fn: Callable[..., float], *, name: str | None = None, needs_reference: bool = True, **options: Any
    ):
        if not callable(fn):
            raise CrossroadsError(f"CallableScorer needs a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.needs_reference = needs_reference
        self.options = options
        try:
            parameters = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # some builtins have no signature
            parameters = {}
        self._takes_question = "question" in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
        )

    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        if self._takes_question:
            return self.fn(response, reference, question=question, **self.options)
        return self.fn(response, reference, **self.options)


def as_scorer(scorer: Scorer | Callable[..., float] | str) -> Scorer:
    """A Scorer from a Scorer, a registry name (see ``make_scorer``) or a plain function."""
    if isinstance(scorer, Scorer):
        return scorer
    if isinstance(scorer, str):
        return make_scorer(scorer)
    if callable(scorer):
        return CallableScorer(scorer)
    raise CrossroadsError(f"expected a scorer, a scorer name or a function, got {type(scorer).__name__}")


# -- penalties -------------------------------------------------------------------------
class PenalisedScorer(Scorer):
    """``max(0, scorer(...) - weight * penalty(response))``; see ``penalised``."""

    def __init__(self, scorer: Scorer, penalty: Callable[[str], float], weight: float):
        self.scorer = scorer
        self.penalty = penalty
        self.weight = weight
        self.name = f"{scorer.name}-{getattr(penalty, '__name__', 'penalty')}"
        self.needs_reference = scorer.needs_reference

    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        base = self.scorer.score(response, reference, question=question)
        penalty = float(self.penalty(response))
        if not 0.0 <= penalty <= 1.0:
            raise CrossroadsError(f"penalty {self.name!r} returned {penalty!r}; a penalty must lie in [0, 1]")
        return max(0.0, base - self.weight * penalty)


def penalised(
    scorer: Scorer | Callable[..., float] | str, penalty: Callable[[str], float], weight: float = 1.0
) -> Scorer:
    """``scorer`` minus ``weight`` times a penalty in [0, 1] of the response (floored at 0).

    For toxicity, bias or policy checks: ``penalty(response)`` returns 0 for a clean
    response and up to 1 for the worst.

    >>> rude = lambda response: float("idiot" in response.lower())
    >>> polite = penalised("exact", rude, weight=0.5)
    >>> polite("Paris", "Paris"), polite("Paris, idiot", "Paris, idiot")
    (1.0, 0.5)
    """
    if not callable(penalty):
        raise CrossroadsError(f"penalty must be a function of the response, got {type(penalty).__name__}")
    if not (weight >= 0.0 and math.isfinite(weight)):
        raise CrossroadsError(f"penalty weight must be a finite number >= 0, got {weight!r}")
    return PenalisedScorer(as_scorer(scorer), penalty, float(weight))


# -- registry --------------------------------------------------------------------------
#: The scorers by name, each with what it does.
SCORERS = Registry(
    "scorer",
    {"choice": "crossroads.grading.answers:choice_scorer",
     "number": "crossroads.grading.answers:number_scorer",
     "exact": "crossroads.grading.answers:exact_scorer",
     "embedding": "crossroads.grading.similarity:EmbeddingSimilarity",
     "judge": "crossroads.grading.judge:LLMJudge"},
    {"choice": "multiple-choice letter match",
     "number": "GSM8K-style final-number match",
     "exact": "SQuAD-style normalised exact match",
     "embedding": "embedding cosine similarity to the reference",
     "judge": "1-10 rating by an OpenAI-compatible chat model"},
)


def make_scorer(spec: str, **options: Any) -> Scorer:
    """The scorer ``spec`` names (``"choice"``, ``"choice:letters=ABCD"``), built with ``options``.

    >>> make_scorer("choice", letters="ABCD")("Answer: (B)", "B")
    1.0
    """
    return SCORERS.build(spec, **options)
