"""Pairwise comparisons between the models of a pool, read off recorded outcomes.

The preference routers (``sw_ranking``, ``mf``) learn from battles, as RouteLLM
learned from Chatbot Arena votes.  Here every query is a battle between every pair
of models whose outcomes are both recorded: a beats b when quality_a > quality_b,
b beats a when lower, a tie when equal.  A missing outcome (NaN) makes no battle:
it is never counted as a loss.

Ties follow RouteLLM's ``compute_elo_mle_with_tie``: one tie counts as half a win
for each side.  ``tie_weight`` scales that (1: RouteLLM's Elo handling, 0: drop ties
as RouteLLM's matrix-factorisation training did).

Also here: a batched, weighted Bradley-Terry fit, and the map from pairwise win
probabilities back to per-model quality that both routers use for ``predict``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Codes of ``encode_outcomes``: one signed byte per (query, pair).
MISSING_CODE = -1


def pair_indices(n_models: int) -> tuple[np.ndarray, np.ndarray]:
    """Model columns (a, b) of every unordered pair a < b, in ``np.triu_indices`` order."""
    return np.triu_indices(n_models, k=1)


def pair_outcomes(quality: np.ndarray) -> np.ndarray:
    """Per-query outcome of every pair, shape ``(n_queries, n_pairs)``.

    1 when model a's quality beats b's, 0.5 on a tie, 0 when b wins, NaN when either
    outcome is missing.  Pairs are ordered as ``pair_indices``.

    >>> pair_outcomes(np.array([[1.0, 0.0, np.nan], [0.5, 0.5, 0.7]]))
    array([[1. , nan, nan],
           [0.5, 0. , 0. ]])
    """
    quality = np.asarray(quality, dtype=np.float64)
    a, b = pair_indices(quality.shape[1])
    return 0.5 * (np.sign(quality[:, a] - quality[:, b]) + 1.0)  # sign(NaN) stays NaN


def encode_outcomes(outcomes: np.ndarray) -> np.ndarray:
    """``pair_outcomes`` as int8 codes (0 b wins, 1 tie, 2 a wins, -1 missing): small to save."""
    return np.where(np.isnan(outcomes), MISSING_CODE, np.nan_to_num(outcomes) * 2).astype(np.int8)


def decode_outcomes(codes: np.ndarray) -> np.ndarray:
    """Inverse of ``encode_outcomes``."""
    return np.where(codes == MISSING_CODE, np.nan, codes / 2.0)


@dataclass(frozen=True)
class Comparisons:
    """Battles as flat arrays, one entry per (query, pair) with both outcomes recorded.

    ``outcome`` is 1 (a wins), 0.5 (tie) or 0 (b wins); ``weight`` is 1 for a decisive
    battle and ``tie_weight`` for a tie.
    """

    query: np.ndarray
    model_a: np.ndarray
    model_b: np.ndarray
    outcome: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.query)


def comparisons(quality: np.ndarray, tie_weight: float = 1.0) -> Comparisons:
    """Every recorded battle of ``quality`` (n_queries, n_models); ties dropped when ``tie_weight`` is 0.

    >>> c = comparisons(np.array([[1.0, 0.0, 1.0], [np.nan, 0.2, 0.1]]), tie_weight=0.0)
    >>> c.query.tolist(), c.model_a.tolist(), c.model_b.tolist(), c.outcome.tolist()
    ([0, 0, 1], [0, 1, 1], [1, 2, 2], [1.0, 0.0, 1.0])
    """
    outcomes = pair_outcomes(quality)
    a, b = pair_indices(np.shape(quality)[1])
    keep = ~np.isnan(outcomes)
    if tie_weight == 0:
        keep &= outcomes != 0.5
    query, pair = np.nonzero(keep)
    outcome = outcomes[query, pair]
    weight = np.where(outcome == 0.5, tie_weight, 1.0)
    small = np.int16 if np.shape(quality)[1] < 2**15 else np.int32
    return Comparisons(query.astype(np.int32), a[pair].astype(small), b[pair].astype(small), outcome, weight)


def win_tensor(outcomes: np.ndarray, n_models: int, tie_weight: float = 1.0) -> np.ndarray:
    """Per-query win counts ``wins[q, a, b]`` (float32, ``(n_queries, n_models, n_models)``).

    ``outcomes`` are ``pair_outcomes``.  A decisive battle adds 1 to the winner's cell;
    a tie adds ``tie_weight / 2`` to both directions; a missing one adds nothing.  For
    12,000 queries x 29 models this is 40 MB.

    >>> win_tensor(pair_outcomes(np.array([[1.0, 1.0, 0.0]])), 3)[0]
    array([[0. , 0.5, 1. ],
           [0.5, 0. , 1. ],
           [0. , 0. , 0. ]], dtype=float32)
    """
    outcomes = np.asarray(outcomes)
    a, b = pair_indices(n_models)
    tie = outcomes == 0.5
    a_wins = np.where(tie, 0.5 * tie_weight, outcomes == 1.0)
    b_wins = np.where(tie, 0.5 * tie_weight, outcomes == 0.0)
    wins = np.zeros((len(outcomes), n_models, n_models), dtype=np.float32)
    wins[:, a, b] = a_wins
    wins[:, b, a] = b_wins
    return wins


def bradley_terry(
    wins: np.ndarray, l2: float = 0.0, num_iters: int = 30, tol: float = 1e-8, max_step: float = 4.0
) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry ratings of a batch of weighted win matrices.

    ``wins[..., a, b]`` is the (weighted) number of times a beat b, ties already split
    half and half.  Returns ratings in natural log-odds units, centred to mean 0, with
    P(a beats b) = sigmoid(r_a - r_b).  This is RouteLLM's ``compute_elo_mle_with_tie``
    (a logistic regression without intercept) with an optional Gaussian prior
    ``l2 / 2 * |r|^2`` that keeps ratings finite when a model never loses; RouteLLM's
    Elo scale is ``1000 + 400 * r / ln(10)``.  Solved by Newton's method, vectorised
    over the batch, each step scaled to at most ``max_step`` per rating.

    >>> r = bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]))  # a won 3 of 4
    >>> round(float(r[0] - r[1]), 6), round(float(np.log(3)), 6)
    (1.098612, 1.098612)
    """
    wins = np.asarray(wins, dtype=np.float64)
    squeeze = wins.ndim == 2
    if squeeze:
        wins = wins[None]
    batch, m = wins.shape[0], wins.shape[-1]
    total = wins + np.swapaxes(wins, 1, 2)
    ratings = np.zeros((batch, m))
    if m < 2:
        return ratings[0] if squeeze else ratings
    eye = np.eye(m, dtype=bool)
    # Ratings are defined up to a constant: adding c * 11^T to the (negated) Hessian
    # pins the step to mean 0 without changing it.  The tiny ridge covers models
    # that took part in no battle at all.
    scale = np.maximum(total.sum(axis=(1, 2)) / m, 1e-12)[:, None, None]
    gauge = scale / m * np.ones((m, m)) + (l2 + 1e-9 * scale) * eye
    active = np.ones(batch, dtype=bool)
    for _ in range(num_iters):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        r, w, n = ratings[idx], wins[idx], total[idx]
        p = 1.0 / (1.0 + np.exp(-(r[:, :, None] - r[:, None, :])))  # P(a beats b)
        grad = (w - n * p).sum(axis=2) - l2 * r
        curv = n * p * (1.0 - p)
        neg_hess = -curv
        neg_hess[:, eye] = curv.sum(axis=2)
        step = np.linalg.solve(neg_hess + gauge[idx], grad[:, :, None])[:, :, 0]
        biggest = np.abs(step).max(axis=1)
        step *= np.minimum(1.0, max_step / np.maximum(biggest, 1e-300))[:, None]
        ratings[idx] = r + step
        active[idx[biggest < tol]] = False
    ratings -= ratings.mean(axis=1, keepdims=True)
    return ratings[0] if squeeze else ratings


def quality_from_win_probabilities(win_prob: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Per-model quality from pairwise win probabilities ``win_prob[..., a, b]``.

    quality_a = level + (1/m) * sum_b (2 P(a beats b) - 1), with the diagonal at 0.5.
    When ties count half, 2 P(a beats b) - 1 = E[quality_a - quality_b] for outcomes in
    {0, 1}, so these are the qualities whose mean is ``level`` and whose differences
    match the predicted win probabilities (for two models exactly).  ``level`` is the
    mean quality over the pool (a scalar or one per query).
    """
    m = win_prob.shape[-1]
    return np.asarray(level)[..., None] + (2.0 * win_prob - 1.0).sum(axis=-1) / m


def mean_quality_per_query(quality: np.ndarray) -> np.ndarray:
    """Mean recorded quality of each query over the pool (NaN when nothing is recorded)."""
    quality = np.asarray(quality, dtype=np.float64)
    recorded = ~np.isnan(quality)
    count = recorded.sum(axis=1)
    total = np.where(recorded, quality, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
