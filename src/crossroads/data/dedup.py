"""Questions that recur across datasets, found by normalised text.

Benchmarks borrow from each other: MMLU questions recur in MMLU-Pro and in RouterDC's
MMLU files, with other answer options or other spacing.  A query's key is its question
stem (the text before the first answer-option line such as ``A. ...`` or ``(A) ...``,
when what comes before is long enough to be a question), Unicode-normalised (NFKC),
case-folded, with every run of non-alphanumeric characters made one space.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

_OPTION_LINE = re.compile(r"\n\s*\(?[A-J][.)]\s")
_NOT_ALNUM = re.compile(r"[\W_]+")
#: A stem shorter than this (after normalising) is not trusted alone: the options stay in the key.
MIN_STEM_CHARS = 20


def question_key(prompt: str) -> str:
    """The normalised question stem of ``prompt`` (see the module docstring)."""
    text = unicodedata.normalize("NFKC", prompt or "")
    stem = _OPTION_LINE.split(text, maxsplit=1)[0]
    key = _normalise(stem)
    return key if len(key) >= MIN_STEM_CHARS else _normalise(text)


def overlap(train_prompts: Sequence[str], test_prompts: Sequence[str]) -> np.ndarray:
    """A mask over ``train_prompts``: True where the question also appears among ``test_prompts``."""
    held_out = {question_key(p) for p in test_prompts}
    return np.array([question_key(p) in held_out for p in train_prompts], dtype=bool)


def _normalise(text: str) -> str:
    return _NOT_ALNUM.sub(" ", text.casefold()).strip()
