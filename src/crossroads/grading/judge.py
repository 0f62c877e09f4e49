"""A grader that asks an LLM: a 1-10 rating from any OpenAI-compatible chat model (MT-Bench's style)."""

from __future__ import annotations

import json
import re
import string
from typing import TYPE_CHECKING

from crossroads.errors import CrossroadsError
from crossroads.grading.scorers import Scorer

if TYPE_CHECKING:
    import httpx


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


def rating_quality(rating: float) -> float:
    """The quality in [0, 1] of a 1-10 rating: ``(rating - 1) / 9``.

    >>> rating_quality(1), rating_quality(7), rating_quality(10)
    (0.0, 0.6666666666666666, 1.0)
    """
    return (float(rating) - 1.0) / 9.0


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
    CrossroadsError: a failed judgement is not a low score.  ``http_client`` (an
    ``httpx.Client``) is the seam for tests and proxies.

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
        http_client: httpx.Client | None = None,
    ):
        from crossroads.upstream.http import Endpoint

        if not base_url or not model:
            raise CrossroadsError("LLMJudge needs a base_url (e.g. http://localhost:8000/v1) and a model name")
        if template is not None:
            _check_template(template)
        self.endpoint = Endpoint(base_url, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=max_retries,
                                  backoff_s=backoff_s, http_client=http_client, label="judge ")
        self.base_url = self.endpoint.base_url
        self.model = model
        self.template = template
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.lenient = lenient
        self.name = f"judge:{model}@{self.base_url}"
        self.needs_reference = template is not None and "{reference}" in template

    def __repr__(self) -> str:
        return f"LLMJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.endpoint.api_key_env!r})"

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
        answer = self.ask(response, reference, question=question)
        if not answer.strip():
            raise CrossroadsError(f"judge {self._url} answered with no text")
        return parse_rating(answer, lenient=self.lenient)

    def ask(self, response: str, reference: str | None = None, *, question: str | None = None) -> str:
        """The judge's whole answer about ``response`` (empty if it gave no text), before any rating is read.

        Raises CrossroadsError when the judge cannot be reached or does not answer in the
        chat-completions format; a missing rating is for the caller to find (:func:`parse_rating`).
        """
        messages = [{"role": "user", "content": self.prompt(response, reference, question)}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return self._answer(self.endpoint.post("chat/completions", payload, model=self.model))

    def _score(self, response: str, reference: str | None, question: str | None) -> float:
        return rating_quality(self.rating(response, reference, question=question))

    def close(self) -> None:
        """Close the connection pool (it reopens if the judge is used again)."""
        self.endpoint.close()

    @property
    def _url(self) -> str:
        return self.endpoint.url("chat/completions")

    def _answer(self, response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as error:
            raise CrossroadsError(
                f"judge {self._url} did not answer in the chat-completions format "
                f"(expected choices[0].message.content; problem: {error!r}): {response.text[:200]!r}"
            ) from None
        if content is None:  # e.g. a reasoning model that spent its tokens thinking
            return ""
        if not isinstance(content, str):
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
