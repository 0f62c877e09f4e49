"""Text features for routers that read the prompt: TF-IDF word n-grams and prompt-shape counts.

The TF-IDF weighting is scikit-learn's (smooth idf, sublinear tf, rows scaled to unit
length) written out here so a fitted vocabulary saves as plain arrays.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from scipy import sparse

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


#: Words that mark steps of arithmetic in a word problem; counted one feature each.
STEP_WORDS = ("twice", "half", "third", "quarter", "percent", "%", "each", "per", "every", "total", "remaining",
              "left", "more", "less", "times", "average", "ratio", "fraction", "discount", "profit", "hours",
              "minutes", "week", "month", "year")
SHAPE_FEATURES = 11 + len(STEP_WORDS)


def shape_features(prompts: Sequence[str]) -> np.ndarray:
    """Counts that track difficulty more than topic: length, numbers, symbols and steps of arithmetic."""
    rows = []
    for text in prompts:
        numbers = _NUMBER.findall(text)
        words = [word.strip(".,;:?!()\"'") for word in text.lower().split()]
        rows.append([
            len(text) / 1000,
            len(words) / 200,
            len(numbers) / 10,
            len(set(numbers)) / 10,
            text.count("%"),
            text.count("/"),
            text.count("$"),
            text.count(".") / 10,
            text.count("?"),
            sum(len(number) > 3 for number in numbers) / 5,
            sum("." in number for number in numbers) / 3,
            *(words.count(step) for step in STEP_WORDS),
        ])
    return np.asarray(rows, dtype=np.float64).reshape(len(prompts), SHAPE_FEATURES)


class TfidfVocabulary:
    """Word uni- and bi-grams seen in at least ``min_df`` training prompts, at most ``max_terms`` of them."""

    def __init__(self, terms: Sequence[str], idf: np.ndarray):
        from sklearn.feature_extraction.text import CountVectorizer

        self.terms = np.asarray(terms, dtype=str)
        self.idf = np.asarray(idf, dtype=np.float64)
        self._counter = CountVectorizer(ngram_range=(1, 2), vocabulary={t: i for i, t in enumerate(self.terms)})

    @classmethod
    def fit(cls, prompts: Sequence[str], min_df: int = 2, max_terms: int = 50_000) -> TfidfVocabulary:
        from sklearn.feature_extraction.text import CountVectorizer

        min_df = min(min_df, max(len(prompts), 1))
        counter = CountVectorizer(ngram_range=(1, 2), min_df=min_df, max_features=max_terms)
        try:
            counts = counter.fit_transform(prompts)
        except ValueError:  # no term survives min_df: an empty vocabulary still works
            return cls([], np.zeros(0))
        document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
        idf = np.log((1 + len(prompts)) / (1 + document_frequency)) + 1.0
        return cls(counter.get_feature_names_out(), idf)

    def transform(self, prompts: Sequence[str]) -> sparse.csr_matrix:
        if len(self.terms) == 0:
            return sparse.csr_matrix((len(prompts), 0))
        counts = self._counter.transform(prompts).astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)
        weighted = counts @ sparse.diags(self.idf)
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        return sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted
