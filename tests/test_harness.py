"""The evaluation harness on data whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import two_topic_dataset

from crossroads.errors import CrossroadsError
from crossroads.evaluate.harness import default_pair, evaluate
from crossroads.evaluate.splits import cross_validation_splits, kfold_indices
from crossroads.routers import ROUTERS


@pytest.fixture(scope="module")
def run():
    dataset, embeddings, _ = two_topic_dataset(n=300, n_models=2)
    dataset.quality[:, 0] = 1.0  # the strong model is always right; the weak one only on topic Y
    dataset.cost_usd[:, 0] = 0.01  # and the strong model costs five times as much
    evaluation = evaluate(["knn:k=10"], dataset, embeddings, folds=3,
                          pair=("model-0", "model-1"))
    return dataset, {entry.name: entry for entry in evaluation.entries}, evaluation


def test_a_router_that_learns_the_topics_approaches_the_oracle(run):
    _, entries, _ = run
    knn, rand, oracle = entries["knn:k=10"], entries["random"], entries["oracle"]
    assert knn.metrics["apgr"] > 0.9 * oracle.metrics["apgr"]
    assert abs(rand.metrics["apgr"] - 0.5) < 0.15
    assert knn.metrics["cpt50"] < rand.metrics["cpt50"]


def test_single_models_are_their_recorded_means(run):
    dataset, entries, _ = run
    for j, name in enumerate(dataset.model_names):
        assert entries[name].metrics["mean_quality"] == pytest.approx(dataset.quality[:, j].mean())
        assert entries[name].metrics["mean_cost_usd"] == pytest.approx(dataset.cost_usd[:, j].mean())
    assert entries["model-0"].metrics["strong_share"] == 1.0


def test_oracle_calls_the_strong_model_only_where_the_weak_one_fails(run):
    dataset, entries, _ = run
    oracle = entries["oracle"].metrics
    assert oracle["mean_quality"] == 1.0 and oracle["best_quality"] == 1.0
    topic_x = dataset.quality[:, 1] == 0
    expected_cost = np.where(topic_x, dataset.cost_usd[:, 0], dataset.cost_usd[:, 1]).mean()
    assert oracle["mean_cost_usd"] == pytest.approx(expected_cost)
    assert oracle["cpt50"] == pytest.approx(topic_x.mean() / 2, abs=0.02)


def test_json_keys_are_lower_case_and_finite_or_null(run):
    _, _, evaluation = run
    data = evaluation.to_json()
    assert set(data["entries"]) == {"knn:k=10", "random", "model-0", "model-1", "oracle"}
    for key in ("apgr", "cpt50", "cpt80", "aiq", "cost_share_at_95", "cost_share_at_97", "cost_share_at_100"):
        assert key in data["entries"]["knn:k=10"]


def test_train_test_mode_and_its_errors():
    dataset, embeddings, _ = two_topic_dataset(n=200, n_models=3)
    train, test = np.arange(200) < 150, np.arange(200) >= 150
    evaluation = evaluate(["knn:k=10"], dataset.subset(train), embeddings[train],
                          test=(dataset.subset(test), embeddings[test]))
    assert evaluation.setup["method"] == "train/test" and evaluation.setup["queries"] == 50
    with pytest.raises(CrossroadsError, match="model-2"):
        evaluate(["knn"], dataset.subset(train).select_models(["model-0", "model-1"]),
                 embeddings[train], test=(dataset.subset(test), embeddings[test]))


def test_default_pair_and_its_errors():
    dataset, _, _ = two_topic_dataset(n=50, n_models=2)
    dataset.quality[:, 1] = 1.0  # model-1 is now the better model
    assert default_pair(dataset, None, None) == ("model-1", "model-0")
    assert default_pair(dataset, "model-0", "model-1") == ("model-0", "model-1")
    with pytest.raises(CrossroadsError, match="both"):
        default_pair(dataset, "model-0", None)
    with pytest.raises(CrossroadsError, match="unknown model"):
        default_pair(dataset, "model-0", "gpt-9")
    three, _, _ = two_topic_dataset(n=50, n_models=3)
    assert default_pair(three, None, None) is None


def test_folds_partition_the_queries():
    folds = kfold_indices(103, 5, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(103))
    for split in cross_validation_splits(103, 5, seed=1):
        assert not set(split.train) & set(split.test) and len(split.train) + len(split.test) == 103
    with pytest.raises(CrossroadsError, match="--cv"):
        kfold_indices(10, 1)


def test_routers_are_named_by_specs_checked_against_their_constructor():
    spec = ROUTERS.spec("knn:k=100,temperature=0.05")
    assert spec.name == "knn" and dict(spec.params) == {"k": 100, "temperature": 0.05}
    assert ROUTERS.build(spec).k == 100 and spec.label == "knn:k=100,temperature=0.05"
    with pytest.raises(CrossroadsError, match="router 'knn' takes no value without a name"):
        ROUTERS.spec("knn:100")
