"""Scorers turn a model's response into a quality in [0, 1].

PickLLM (Sikeridis et al., arXiv 2412.12170) rewards a model by the accuracy of
its answer as judged by a "customizable scoring function"; these are such functions.
Each scorer compares a ``response`` with a ``reference`` (the expected answer) and,
for the LLM judge, the ``question``:

``choice_letter``      multiple-choice letter match ("['D']", "The answer is (C).", "Answer: B")
``final_number``       GSM8K-style: the response's final number against "#### 18"
``normalised_match``   SQuAD-style match after removing case, punctuation, articles, spaces
``EmbeddingSimilarity`` cosine similarity of response and reference embeddings
``LLMJudge``           a 1-10 rating from any OpenAI-compatible chat model
``CallableScorer``     any user function, e.g. a toxicity check; ``penalised`` subtracts penalties

``make_scorer(name, **options)`` builds one by name (``choice``, ``number``, ``exact``,
``embedding``, ``judge``).  Nothing heavy is imported until a scorer is used.

>>> choice_letter("['D']", "D"), final_number("so she makes $1,018.", "#### 1018")
(1.0, 1.0)
>>> make_scorer("exact")("The Eiffel Tower!", "eiffel tower")
1.0
"""

from __future__ import annotations

import ast
import inspect
import json
import math
import re
import string
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from crossroads.errors import CrossroadsError

if TYPE_CHECKING:
    import httpx
    import numpy as np

    from crossroads.embeddings.base import Embedder

#: The option letters MMLU-Pro uses (up to ten options); RouterBench's ARC uses A-D.
DEFAULT_LETTERS = "ABCDEFGHIJ"


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


# -- multiple choice -------------------------------------------------------------------
def choice_letter(response: str, reference_letter: str, *, letters: str = DEFAULT_LETTERS) -> float:
    """1.0 if the option letter chosen in ``response`` is ``reference_letter``, else 0.0.

    See ``extract_choice`` for how the letter is found; a response that names no
    letter scores 0.

    >>> [choice_letter(r, "C") for r in ["['C']", "C\\n", "The answer is (C).", "Answer: B", "I do not know"]]
    [1.0, 1.0, 1.0, 0.0, 0.0]
    """
    reference = reference_letter.strip().strip("()[].'\"").upper()
    if len(reference) != 1 or reference not in letters:
        raise CrossroadsError(f"reference {reference_letter!r} is not one option letter of {letters}")
    return float(extract_choice(response, letters=letters) == reference)


def extract_choice(response: str, *, letters: str = DEFAULT_LETTERS) -> str | None:
    """The option letter a response chooses, or None.

    In order: a response that is only a letter (``D``, ``(D)``, ``D.``, ``D)``, also
    inside a stringified list like ``['D']``); the first "answer is (X)"; the last
    "Answer: X"; a letter that opens the response followed by ``)``, ``.``, ``:`` or a
    line break.  The patterns after the first follow MMLU-Pro's ``extract_answer``.
    Unlike MMLU-Pro's last fallback, a lone capital letter elsewhere in the text is not
    taken: "I do not know" and "A questioning look" choose nothing.

    >>> extract_choice("['B\\\\n']"), extract_choice("Based on the passage, the answer is D."), extract_choice("A) 4 m/s")
    ('B', 'D', 'A')
    """
    option = f"[{re.escape(letters)}]"
    text = _unwrap_list(response).strip()
    bare = re.fullmatch(rf"[\[(*\s]*({option})[\])*.:\s]*", text)
    if bare:
        return bare.group(1)
    boxed = [letter for letter in _BOXED.findall(text) if letter in letters]
    if boxed:
        return boxed[-1]
    opener = r"[(\[{}*$\\\s]*"  # "(", "[", "**", "$", "\\(", "\\text{...}" before the letter
    # IGNORECASE is for "Answer"/"answer"; a lowercase letter after it is no option.
    stated = [m.group(1) for m in re.finditer(rf"answer is:?{opener}({option})\b", text, re.IGNORECASE)]
    stated = [letter for letter in stated if letter in letters]
    if stated:
        return stated[0]
    labelled = [m.group(1) for m in re.finditer(rf"answer\s*:{opener}({option})\b", text, re.IGNORECASE)]
    labelled = [letter for letter in labelled if letter in letters]
    if labelled:
        return labelled[-1]
    opening = re.match(rf"[(\[*]*({option})(?:[).:\]*]|\s*\n|\s*$|\s+\()", text)
    return opening.group(1) if opening else None


_BOXED = re.compile(r"\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?\(?([A-Z])\)?\s*\}")


def _unwrap_list(text: str) -> str:
    """The text inside a stringified Python list of strings (RouterBench's format), else ``text``."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]") and ("'" in stripped or '"' in stripped):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return text
        if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
            return "\n".join(value)
    return text


# -- final number (GSM8K) --------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])-?\$?\s?\d[\d,]*(?:\.\d+)?|(?<![\w.\d])-?\$?\s?\.\d+")


def final_number(response: str, reference: str, *, rel_tol: float = 1e-6) -> float:
    """1.0 if the response's final number equals the reference's, else 0.0 (GSM8K style).

    The reference is a GSM8K answer ending in ``#### <number>`` or just a number.
    The response's number is the one after its last ``####`` when it has one, else
    its last number; ``$`` signs, thousands commas and a trailing full stop are
    ignored, so "$1,018." reads as 1018.  Numbers are equal within ``rel_tol``.

    >>> final_number("9 * $2 = $<<9*2=18>>18.\\n#### 18", "#### 18"), final_number("It costs 18.50 dollars.", "18.5")
    (1.0, 1.0)
    """
    expected = extract_final_number(reference)
    if expected is None:
        raise CrossroadsError(f"reference {reference[-80:]!r} holds no number (expected e.g. '#### 18')")
    found = extract_final_number(response)
    if found is None:
        return 0.0
    return float(math.isclose(found, expected, rel_tol=rel_tol, abs_tol=rel_tol))


def extract_final_number(text: str) -> float | None:
    """The number after the last ``####`` in ``text``, else the last number in it, else None.

    >>> extract_final_number("Total: $1,234.50."), extract_final_number("#### -3"), extract_final_number("none")
    (1234.5, -3.0, None)
    """
    _, marker, after = text.rpartition("####")
    if marker:
        numbers = _NUMBER.findall(after)
        if numbers:
            return _to_float(numbers[0])
    numbers = _NUMBER.findall(text)
    return _to_float(numbers[-1]) if numbers else None


def _to_float(token: str) -> float:
    return float(token.replace("$", "").replace(",", "").replace(" ", ""))


# -- normalised exact match (SQuAD) ----------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles (a, an, the), single spaces.

    >>> normalise_answer("  The  Eiffel-Tower! ")
    'eiffeltower'
    """
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalised_match(response: str, reference: str | Sequence[str]) -> float:
    """1.0 if the normalised response equals the normalised reference (or any of several), else 0.0.

    >>> normalised_match("Paris.", ["paris", "Paris, France"]), normalised_match("a cat", "the dog")
    (1.0, 0.0)
    """
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references:
        raise CrossroadsError("normalised_match needs at least one reference answer")
    answer = normalise_answer(_unwrap_list(response))
    return float(any(answer == normalise_answer(ref) for ref in references))


# -- embedding similarity --------------------------------------------------------------
class EmbeddingSimilarity(Scorer):
    """Cosine similarity of the response's and the reference's embeddings, mapped to [0, 1].

    The map is ``max(0, (cos - floor) / (1 - floor))``: with the default ``floor=0``
    negative similarities count as 0 and positive ones as themselves.  The embedder's
    vectors are unit length, so the cosine is their dot product.  Similarity measures
    closeness of meaning, not correctness: "18 dollars" and "81 dollars" are close.
    ``embedder=None`` uses ``crossroads.embeddings.make_embedder()`` (offline MiniLM),
    loaded on first use.
    """

    name = "embedding"

    def __init__(self, embedder: Embedder | None = None, *, floor: float = 0.0):
        if not -1.0 <= floor < 1.0:
            raise CrossroadsError(f"floor must lie in [-1, 1), got {floor!r}")
        self.embedder = embedder
        self.floor = floor

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            from crossroads.embeddings import make_embedder

            self.embedder = make_embedder()
        return self.embedder

    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        return float(self.score_many([response], [reference])[0])

    def score_many(self, responses, references=None, questions=None):  # type: ignore[override]
        """All pairs embedded in one batch: much faster than scoring them one by one."""
        import numpy as np

        responses, references = list(responses), list(references or [])
        if len(references) != len(responses):
            raise CrossroadsError(f"score_many got {len(responses)} responses and {len(references)} references")
        for text in (*responses, *references):
            if not isinstance(text, str):
                raise CrossroadsError(f"embedding similarity needs texts, got {type(text).__name__}")
        if not responses:
            return np.zeros(0)
        vectors = self._embedder().embed(responses + references)
        n = len(responses)
        cosine = np.einsum("ij,ij->i", vectors[:n].astype(np.float64), vectors[n:].astype(np.float64))
        return np.clip((cosine - self.floor) / (1.0 - self.floor), 0.0, 1.0)


# -- LLM judge -------------------------------------------------------------------------
#: The judge's instructions when a reference answer is given (MT-Bench's single-answer
#: grading convention: an explanation, then the rating as "[[n]]").
JUDGE_TEMPLATE_WITH_REFERENCE = """\
You are an impartial judge. Evaluate the quality of the assistant's answer to the \
user's question below. A reference answer is given: compare the assistant's answer \
with it, and identify and correct any mistakes. Be as objective as possible. Give a \
short explanation, then rate the answer on a scale of 1 to 10 in exactly this format: \
"Rating: [[5]]".

[Question]
{question}

[Reference answer]
{reference}

[Assistant's answer]
{response}"""

#: The judge's instructions without a reference answer.
JUDGE_TEMPLATE = """\
You are an impartial judge. Evaluate the quality of the assistant's answer to the \
user's question below: its helpfulness, relevance, accuracy, depth and level of \
detail. Be as objective as possible. Give a short explanation, then rate the answer \
on a scale of 1 to 10 in exactly this format: "Rating: [[5]]".

[Question]
{question}

[Assistant's answer]
{response}"""

_TEMPLATE_FIELDS = {"question", "response", "reference"}
_RATING = (
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]"),  # MT-Bench: "Rating: [[7]]"
    re.compile(r"rating\s*(?:is|of)?\s*[:=]?\s*\[?\s*(\d+(?:\.\d+)?)", re.IGNORECASE),
    re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10\b", re.IGNORECASE),
)
_FIRST_SMALL_INTEGER = re.compile(r"(?<![\d.])(10|[1-9])(?!\.?\d)")


def parse_rating(text: str, *, lenient: bool = True) -> float:
    """The 1-10 rating in a judge's answer.

    Looked for in order: ``[[7]]`` (MT-Bench's format), ``Rating: 7``, ``7/10`` or
    ``7 out of 10``, and with ``lenient`` the first whole number from 1 to 10.
    Raises CrossroadsError when there is none or it lies outside 1-10.

    >>> parse_rating("Clear and correct. Rating: [[8]]"), parse_rating("I'd give it 6.")
    (8.0, 6.0)
    """
    for pattern in _RATING:
        match = pattern.search(text)
        if match:
            break
    else:
        match = _FIRST_SMALL_INTEGER.search(text) if lenient else None
    if match is None:
        raise CrossroadsError(
            f"the judge's answer holds no 1-10 rating (expected e.g. 'Rating: [[7]]'): {text[:200]!r}"
        )
    rating = float(match.group(1))
    if not 1.0 <= rating <= 10.0:
        raise CrossroadsError(f"the judge rated {rating:g}, outside the 1-10 scale: {text[:200]!r}")
    return rating


class LLMJudge(Scorer):
    """A 1-10 rating from an LLM behind any OpenAI-compatible ``POST {base_url}/chat/completions``.

    The rating r becomes the quality ``(r - 1) / 9``.  ``template`` is the prompt, with
    ``{question}``, ``{response}`` and ``{reference}`` placeholders (literal braces
    doubled); by default ``JUDGE_TEMPLATE_WITH_REFERENCE`` when a reference is given
    and ``JUDGE_TEMPLATE`` otherwise.  ``api_key_env`` names the environment variable
    holding the key, read at each request and never stored or logged; unset means
    no ``Authorization`` header (local servers).  Status 408, 409, 429, 5xx and network
    errors are retried ``max_retries`` times after ``backoff_s`` x 2^attempt seconds
    (or the server's ``Retry-After``, at most 30 s).  An answer without a rating raises
    CrossroadsError: a failed judgement is not a low score.  ``transport`` is httpx's
    seam for tests and proxies.

    >>> judge = LLMJudge("http://localhost:8000/v1", "qwen2.5-7b-instruct")
    >>> judge.name
    'judge:qwen2.5-7b-instruct@http://localhost:8000/v1'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        template: str | None = None,
        *,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        lenient: bool = True,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ):
        if not base_url or not model:
            raise CrossroadsError("LLMJudge needs a base_url (e.g. http://localhost:8000/v1) and a model name")
        if template is not None:
            _check_template(template)
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise CrossroadsError("LLMJudge needs max_retries >= 0, timeout_s > 0 and backoff_s >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.template = template
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.lenient = lenient
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.transport = transport
        self.name = f"judge:{model}@{self.base_url}"
        self.needs_reference = template is not None and "{reference}" in template
        self._client: httpx.Client | None = None

    def __repr__(self) -> str:
        return f"LLMJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def prompt(self, response: str, reference: str | None = None, question: str | None = None) -> str:
        """The text sent to the judge."""
        template = self.template or (JUDGE_TEMPLATE if reference is None else JUDGE_TEMPLATE_WITH_REFERENCE)
        if "{reference}" in template and reference is None:
            raise CrossroadsError("the judge's template has a {reference} placeholder but no reference was given")
        if "{question}" in template and question is None:
            raise CrossroadsError("the judge's template has a {question} placeholder: pass question=... to score()")
        return template.format(question=question, response=response, reference=reference)

    def rating(self, response: str, reference: str | None = None, *, question: str | None = None) -> float:
        """The judge's 1-10 rating of ``response``."""
        messages = [{"role": "user", "content": self.prompt(response, reference, question)}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        answer = self._answer(self._post(payload))
        return parse_rating(answer, lenient=self.lenient)

    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        return (self.rating(response, reference, question=question) - 1.0) / 9.0

    def close(self) -> None:
        """Close the connection pool (it reopens if the judge is used again)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def _url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _post(self, payload: dict[str, Any]) -> httpx.Response:
        import httpx

        from crossroads.http import post_json

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, transport=self.transport)
        return post_json(self._client, self._url, payload, model=self.model, api_key_env=self.api_key_env,
                         max_retries=self.max_retries, backoff_s=self.backoff_s, timeout_s=self.timeout_s,
                         label="judge ")

    def _answer(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as error:
            raise CrossroadsError(
                f"judge {self._url} did not answer in the chat-completions format "
                f"(expected choices[0].message.content; problem: {error!r}): {response.text[:200]!r}"
            ) from None
        if not isinstance(content, str) or not content.strip():
            raise CrossroadsError(f"judge {self._url} answered with no text: {response.text[:200]!r}")
        return content


def _check_template(template: str) -> None:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise CrossroadsError(f"judge template is not a valid format string ({error}); double literal braces") from None
    unknown = fields - _TEMPLATE_FIELDS
    if unknown:
        raise CrossroadsError(
            f"judge template has unknown placeholders {sorted(unknown)}; use {{question}}, {{response}}, {{reference}}"
        )
    if "response" not in fields:
        raise CrossroadsError("judge template has no {response} placeholder: the judge would not see the answer")


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
#: Scorer names for ``make_scorer``, with what each does.
SCORERS: dict[str, str] = {
    "choice": "multiple-choice letter match (options: letters)",
    "number": "GSM8K-style final-number match (options: rel_tol)",
    "exact": "SQuAD-style normalised exact match",
    "embedding": "embedding cosine similarity to the reference (options: embedder, floor)",
    "judge": "1-10 rating by an OpenAI-compatible chat model (options: base_url, model, api_key_env, template, ...)",
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "choice": choice_letter,
    "number": final_number,
    "exact": normalised_match,
}
_CLASSES: dict[str, type[Scorer]] = {"embedding": EmbeddingSimilarity, "judge": LLMJudge}


def make_scorer(name: str, **options: Any) -> Scorer:
    """The scorer called ``name`` (a key of ``SCORERS``), built with ``options``.

    >>> make_scorer("choice", letters="ABCD")("Answer: (B)", "B")
    1.0
    """
    if name in _FUNCTIONS:
        target: Callable[..., Any] = _FUNCTIONS[name]
        kinds = (inspect.Parameter.KEYWORD_ONLY,)
    elif name in _CLASSES:
        target = _CLASSES[name]
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    else:
        known = "; ".join(f"{key}: {what}" for key, what in SCORERS.items())
        raise CrossroadsError(f"unknown scorer {name!r}; choose one of: {known}")
    allowed = [p.name for p in inspect.signature(target).parameters.values() if p.kind in kinds]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise CrossroadsError(
            f"scorer {name!r} has no option {', '.join(unknown)}; its options: {', '.join(allowed) or 'none'}"
        )
    if name in _FUNCTIONS:
        return CallableScorer(target, name=name, **options)
    try:
        return target(**options)
    except TypeError as error:  # a required option is missing
        raise CrossroadsError(f"scorer {name!r}: {error}; its options: {', '.join(allowed)}") from None
