"""Graders that read an answer out of a response: a multiple-choice letter, a final number, a short answer.

``choice_letter`` multiple-choice letter match ("['D']", "The answer is (C).", "Answer: B");
``final_number`` GSM8K-style, the response's final number against "#### 18";
``normalised_match`` SQuAD-style match after removing case, punctuation, articles, spaces.
Each also comes as a Scorer by its registry name (``choice``, ``number``, ``exact``).

>>> choice_letter("['D']", "D"), final_number("so she makes $1,018.", "#### 1018")
(1.0, 1.0)
"""

from __future__ import annotations

import ast
import math
import re
import string
from collections.abc import Sequence

from crossroads.errors import CrossroadsError
from crossroads.grading.scorers import CallableScorer, Scorer

#: The option letters MMLU-Pro uses (up to ten options); RouterBench's ARC uses A-D.
DEFAULT_LETTERS = "ABCDEFGHIJ"


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


# -- as scorers ------------------------------------------------------------------------
def choice_scorer(letters: str = DEFAULT_LETTERS) -> Scorer:
    """``choice_letter`` as a Scorer (registry name ``choice``)."""
    return CallableScorer(choice_letter, name="choice", letters=letters)


def number_scorer(rel_tol: float = 1e-6) -> Scorer:
    """``final_number`` as a Scorer (registry name ``number``)."""
    return CallableScorer(final_number, name="number", rel_tol=rel_tol)


def exact_scorer() -> Scorer:
    """``normalised_match`` as a Scorer (registry name ``exact``)."""
    return CallableScorer(normalised_match, name="exact")
