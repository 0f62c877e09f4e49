"""The matrix-factorisation router."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import make_dataset, two_topics

from crossroads.errors import CrossroadsError
from crossroads.routers import load_router
from crossroads.routers.comparisons import pair_outcomes, win_tensor
from crossroads.routers.mf import MatrixFactorizationRouter

# Small data learns in a few hundred Adam steps with a larger learning rate than RouteLLM's.
FAST = dict(dim=16, num_epochs=30, lr=0.02, batch_size=32)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    router = MatrixFactorizationRouter(dim=5, noise_alpha=0.0)
    quality = rng.integers(0, 3, (6, 4)).astype(float)
    quality[0, 1] = np.nan
    wins = win_tensor(pair_outcomes(quality), 4).astype(np.float64)
    params = {"model_vectors": rng.normal(size=(4, 5)), "projection": rng.normal(size=(5, 7)),
              "classifier": rng.normal(size=5)}
    x = rng.normal(size=(6, 7))
    _, weight, grads = router._loss_and_grads(params, x, wins, rng)
    for key, value in params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            old = value[i]
            value[i] = old + 1e-6
            up = router._loss_and_grads(params, x, wins, rng)[0]
            value[i] = old - 1e-6
            down = router._loss_and_grads(params, x, wins, rng)[0]
            value[i] = old
            numeric[i] = (up - down) / 2e-6 / weight
        np.testing.assert_allclose(grads[key], numeric, atol=1e-7)


@pytest.mark.parametrize("n_models", [2, 6])
def test_learns_which_model_wins_each_topic(n_models):
    train, emb, _ = two_topics(400, n_models)
    _, test_emb, topic = two_topics(200, n_models, seed=1)
    router = MatrixFactorizationRouter(**FAST).fit(train, emb)
    p_a = router.win_probability(test_emb, "A", "B")
    on_x, on_y = topic == 0, topic == 1
    assert (p_a[on_x] > 0.8).all() and (p_a[on_y] < 0.2).all()
    best = router.predict(test_emb).argmax(axis=1)
    assert (best[on_x] == 0).all() and (best[on_y] == 1).all()
    if n_models > 2:
        assert (router.win_probability(test_emb, "C", "A") < 0.2).all()


def test_fixed_seed_repeats_and_ties_can_be_dropped():
    train, emb, _ = two_topics(200, 3)
    first = MatrixFactorizationRouter(**FAST).fit(train, emb).predict(emb[:10])
    again = MatrixFactorizationRouter(**FAST).fit(train, emb).predict(emb[:10])
    np.testing.assert_array_equal(first, again)
    other = MatrixFactorizationRouter(**FAST, random_state=1).fit(train, emb).predict(emb[:10])
    assert not np.array_equal(first, other)
    no_ties = MatrixFactorizationRouter(**FAST, tie_weight=0.0).fit(train, emb)
    assert no_ties.predict(emb[:10]).shape == (10, 3)


def test_save_load_round_trip(tmp_path):
    train, emb, _ = two_topics(200, 4)
    _, test_emb, _ = two_topics(50, 4, seed=1)
    router = MatrixFactorizationRouter(**FAST, model_bias=True).fit(train, emb, embedder="test-embedder")
    loaded = load_router(router.save(tmp_path / "mf.npz"))
    assert isinstance(loaded, MatrixFactorizationRouter) and loaded.get_params() == router.get_params()
    assert loaded.models_ == router.models_ and loaded.embedder_ == "test-embedder"
    np.testing.assert_array_equal(loaded.predict(test_emb), router.predict(test_emb))
    np.testing.assert_array_equal(
        loaded.win_probability(test_emb, "B", "D"), router.win_probability(test_emb, "B", "D")
    )


def spread_embeddings(n: int, common: float, seed: int = 2) -> np.ndarray:
    """Random unit embeddings; ``common`` > 0 adds the shared direction real text embeddings have."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 8)) / np.sqrt(8) + common * np.eye(8)[0]
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("common, model_bias", [(1.0, False), (0.0, True)])
def test_missing_outcomes_are_skipped_not_lost(common, model_bias):
    # A is recorded on a quarter of the queries and wins each; B is recorded everywhere.
    # Counting A's missing outcomes as 0 would make B the better model.
    emb = spread_embeddings(200, common)
    quality = np.full((200, 2), 0.5)
    quality[:, 0] = np.where(np.arange(200) % 4 == 0, 1.0, np.nan)
    router = MatrixFactorizationRouter(**FAST, model_bias=model_bias).fit(make_dataset(quality), emb)
    assert (router.win_probability(emb, "A", "B") > 0.5).mean() > 0.95
    assert (router.predict(emb).argmax(axis=1) == 0).mean() > 0.95
    as_zero = MatrixFactorizationRouter(**FAST, model_bias=model_bias).fit(make_dataset(np.nan_to_num(quality)), emb)
    assert (as_zero.win_probability(emb, "A", "B") < 0.5).mean() > 0.95


def test_without_bias_a_global_preference_needs_a_common_direction():
    # RouteLLM's model is linear in the embedding: on centred embeddings it cannot say
    # "A is always better"; a per-model bias can.
    quality = np.tile([1.0, 0.0], (200, 1))
    centred = spread_embeddings(200, 0.0)
    faithful = MatrixFactorizationRouter(**FAST).fit(make_dataset(quality), centred)
    assert (faithful.win_probability(centred, "A", "B") < 0.5).any()
    biased = MatrixFactorizationRouter(**FAST, model_bias=True).fit(make_dataset(quality), centred)
    assert (biased.win_probability(centred, "A", "B") > 0.9).all()


def test_quiet_unless_asked(capsys):
    train, emb, _ = two_topics(100, 2)
    MatrixFactorizationRouter(**FAST).fit(train, emb)
    assert capsys.readouterr().err == ""
    MatrixFactorizationRouter(dim=4, num_epochs=2, verbose=True).fit(train, emb)  # the bar runs and closes


def test_single_model_pool_and_wrong_dimension():
    router = MatrixFactorizationRouter(**FAST).fit(make_dataset(np.array([[0.2], [0.6]])), np.eye(2, 4))
    np.testing.assert_allclose(router.predict(np.ones((3, 4))), 0.4, rtol=1e-6)
    with pytest.raises(CrossroadsError, match="dimensions"):
        router.predict(np.ones((1, 5)))
    with pytest.raises(CrossroadsError, match="no outcome"):
        MatrixFactorizationRouter().fit(make_dataset(np.full((2, 2), np.nan)), np.eye(2, 4))
