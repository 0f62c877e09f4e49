"""The similarity-weighted ranking router and the pairwise comparisons it learns from."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import make_dataset, two_topics

from crossroads.errors import CrossroadsError
from crossroads.routers import load_router
from crossroads.routers.comparisons import (
    bradley_terry,
    comparisons,
    decode_outcomes,
    encode_outcomes,
    pair_outcomes,
    quality_from_win_probabilities,
    win_tensor,
)
from crossroads.routers.sw_ranking import SWRankingRouter


# -- comparisons -----------------------------------------------------------------------
def test_pair_outcomes_skip_missing_and_halve_ties():
    quality = np.array([[1.0, 0.0, np.nan], [0.5, 0.5, 0.7]])
    outcomes = pair_outcomes(quality)
    np.testing.assert_array_equal(outcomes, [[1.0, np.nan, np.nan], [0.5, 0.0, 0.0]])
    np.testing.assert_array_equal(decode_outcomes(encode_outcomes(outcomes)), outcomes)
    wins = win_tensor(outcomes, 3)
    assert wins[0].sum() == 1.0 and wins[0, 0, 1] == 1.0  # the NaN cell made no battle
    np.testing.assert_array_equal(wins[1], [[0, 0.5, 0], [0.5, 0, 0], [1, 1, 0]])
    assert win_tensor(outcomes, 3, tie_weight=0.0)[1, 0, 1] == 0.0


def test_comparisons_flat_arrays_and_tie_options():
    quality = np.array([[1.0, 1.0, 0.0], [np.nan, 0.2, 0.4]])
    kept = comparisons(quality)
    assert len(kept) == 4
    np.testing.assert_array_equal(kept.outcome, [0.5, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(kept.weight, [1.0, 1.0, 1.0, 1.0])
    half = comparisons(quality, tie_weight=0.5)
    np.testing.assert_array_equal(half.weight, [0.5, 1.0, 1.0, 1.0])
    dropped = comparisons(quality, tie_weight=0.0)
    assert len(dropped) == 3 and 0.5 not in dropped.outcome


def test_bradley_terry_two_models_closed_form():
    # A beat B with weight 2, lost with weight 1, tied with weight 1: p = (2 + 0.5) / 4.
    wins = np.array([[0.0, 2.0 + 0.5], [1.0 + 0.5, 0.0]])
    ratings = bradley_terry(wins)
    p = 2.5 / 4
    assert ratings[0] - ratings[1] == pytest.approx(np.log(p / (1 - p)), abs=1e-9)
    assert ratings.sum() == pytest.approx(0.0, abs=1e-12)


def test_bradley_terry_is_the_penalised_maximum_likelihood():
    rng = np.random.default_rng(1)
    wins = rng.poisson(5.0, (8, 5, 5)).astype(float) * (1 - np.eye(5))
    wins[:, 0, :] += wins[:, :, 0]  # model 0 never loses: only l2 keeps it finite
    wins[:, :, 0] = 0
    l2 = 0.1
    ratings = bradley_terry(wins, l2=l2)
    total = wins + np.swapaxes(wins, 1, 2)
    p = 1 / (1 + np.exp(-(ratings[:, :, None] - ratings[:, None, :])))
    grad = (wins - total * p).sum(axis=2) - l2 * ratings
    np.testing.assert_allclose(grad, 0.0, atol=1e-8)
    assert np.isfinite(ratings).all() and (ratings.argmax(axis=1) == 0).all()


def test_quality_from_win_probabilities_recovers_accuracies():
    # Independent 0/1 outcomes with accuracies 0.9 and 0.6: P(A beats B, ties half) = 0.65.
    win_prob = np.array([[0.5, 0.65], [0.35, 0.5]])
    np.testing.assert_allclose(quality_from_win_probabilities(win_prob, 0.75), [0.9, 0.6])


# -- the router ------------------------------------------------------------------------
def test_similarity_weights_are_routellm_s():
    router = SWRankingRouter(gamma=10.0)
    sims = np.array([[0.8, 0.4, 0.0, -0.4]], dtype=np.float32)
    np.testing.assert_allclose(router.similarity_weights(sims), [[100.0, 10 * 10**0.5, 10.0, 10 * 10**-0.5]], rtol=1e-5)
    top = SWRankingRouter(top_k=2).similarity_weights(sims)
    assert (top[0, 2:] == 0).all() and (top[0, :2] > 0).all()


def test_router_recovers_the_closed_form_when_weights_are_equal():
    # gamma = 1 weighs every training query 1: the router's logit is the pooled log-odds.
    quality = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [np.nan, 1.0]])
    router = SWRankingRouter(gamma=1.0, l2=0.0).fit(make_dataset(quality), np.eye(5, 3, dtype=np.float32))
    p = (2 + 0.5) / 4
    logit = router._pair_logit(np.ones((1, 3), dtype=np.float32), 0, 1)
    assert logit[0] == pytest.approx(np.log(p / (1 - p)), abs=1e-6)
    assert router.win_probability(np.ones((1, 3)), "A", "B")[0] == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("n_models", [2, 6])
def test_learns_which_model_wins_each_topic(n_models):
    train, emb, _ = two_topics(600, n_models)
    test, test_emb, topic = two_topics(200, n_models, seed=1)
    router = SWRankingRouter().fit(train, emb)
    p_a = router.win_probability(test_emb, "A", "B")
    on_x, on_y = topic == 0, topic == 1
    assert (p_a[on_x] > 0.8).all() and (p_a[on_y] < 0.2).all()
    best = router.predict(test_emb).argmax(axis=1)
    assert (best[on_x] == 0).all() and (best[on_y] == 1).all()
    if n_models > 2:
        assert (router.win_probability(test_emb, "C", "A") < 0.1).all()


def test_top_k_sharpens_the_ranking():
    train, emb, _ = two_topics(600, 3)
    test, test_emb, topic = two_topics(100, 3, seed=1)
    p_all = SWRankingRouter().fit(train, emb).win_probability(test_emb, "A", "B")
    p_top = SWRankingRouter(top_k=50).fit(train, emb).win_probability(test_emb, "A", "B")
    assert (p_top[topic == 0] > p_all[topic == 0]).all()


def test_save_load_round_trip(tmp_path):
    train, emb, _ = two_topics(300, 4)
    _, test_emb, _ = two_topics(50, 4, seed=1)
    router = SWRankingRouter(top_k=100, l2=0.05).fit(train, emb, embedder="test-embedder")
    path = router.save(tmp_path / "sw.npz")
    loaded = load_router(path)
    assert isinstance(loaded, SWRankingRouter) and loaded.get_params() == router.get_params()
    assert loaded.models_ == router.models_ and loaded.embedder_ == "test-embedder"
    np.testing.assert_array_equal(loaded.predict(test_emb), router.predict(test_emb))
    np.testing.assert_array_equal(
        loaded.win_probability(test_emb, "B", "D"), router.win_probability(test_emb, "B", "D")
    )


def test_missing_outcomes_are_skipped_not_lost():
    # A is recorded on a quarter of the queries and wins each; B is recorded everywhere.
    # Counting A's missing outcomes as 0 would make B the better model.
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((200, 8)).astype(np.float32)
    quality = np.full((200, 2), 0.5)
    quality[:, 0] = np.where(np.arange(200) % 4 == 0, 1.0, np.nan)
    router = SWRankingRouter().fit(make_dataset(quality), emb)
    assert (router.win_probability(emb[:20], "A", "B") > 0.9).all()
    assert (router.predict(emb[:20]).argmax(axis=1) == 0).all()
    as_zero = SWRankingRouter().fit(make_dataset(np.nan_to_num(quality)), emb)
    assert (as_zero.win_probability(emb[:20], "A", "B") < 0.5).all()


def test_single_model_pool_and_wrong_dimension():
    quality = np.array([[0.2], [0.6]])
    router = SWRankingRouter().fit(make_dataset(quality), np.eye(2, 4, dtype=np.float32))
    assert router.predict(np.ones((3, 4))).shape == (3, 1)
    with pytest.raises(CrossroadsError, match="dimensions"):
        router.predict(np.ones((1, 5)))
    with pytest.raises(CrossroadsError, match="no outcome"):
        SWRankingRouter().fit(make_dataset(np.full((2, 2), np.nan)), np.eye(2, 4))
