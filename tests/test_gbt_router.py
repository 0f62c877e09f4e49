"""The gbt router: its numpy tree walk equals scikit-learn's, and it learns per-category strengths."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import two_topic_dataset

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.evaluate.harness import evaluate
from crossroads.routers import load_router, make_router
from crossroads.routers.gbt import Forest


def test_forest_walk_equals_scikit_learn_with_unknown_and_missing_categories():
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    features = rng.normal(size=(3000, 5))
    features[:, 0] = rng.choice(np.arange(0, 60, 2), 3000)  # category codes, only even ones seen
    features[::13, 0] = np.nan
    features[::17, 2] = np.nan
    target = features[:, 1] + np.sin(np.nan_to_num(features[:, 0]))
    fitted, forests = [], []
    for rows in (features[:, 0] != 4, np.ones(3000, bool)):  # the first model never sees category 4
        model = HistGradientBoostingRegressor(max_iter=40, categorical_features=[0]).fit(features[rows], target[rows])
        seen = model._preprocessor.named_transformers_["encoder"].categories_[0]
        fitted.append(model)
        forests.append(([p[0] for p in model._predictors], seen[~np.isnan(seen)].astype(np.int64)))
    forest = Forest.from_sklearn(forests)
    test = rng.normal(size=(500, 5))
    test[:, 0] = rng.integers(0, 62, 500)  # odd codes and 60, 61 were never seen
    test[::5, 0] = np.nan
    test[::7, 2] = np.nan
    walked = forest.predict(test)
    for j, model in enumerate(fitted):
        np.testing.assert_allclose(walked[:, j] + model._baseline_prediction[0, 0], model.predict(test), atol=1e-12)


def task_dataset(n: int = 600, seed: int = 7) -> tuple[RoutingDataset, np.ndarray, np.ndarray]:
    """Identical-looking queries: `big` wins every "exam" query (70%), `small` every "chat" one; nothing else tells."""
    rng = np.random.default_rng(seed)
    task = (rng.random(n) < 0.3).astype(int)
    quality = np.stack([task == 0, task == 1], axis=1).astype(float)
    dataset = RoutingDataset(
        query_ids=[f"q{i}" for i in range(n)], prompts=[f"question number {i}" for i in range(n)],
        categories=[("exam", "chat")[t] for t in task], sources=["synthetic"] * n,
        models=[ModelInfo("big", 10, 30), ModelInfo("small", 0.1, 0.3)], quality=quality,
        cost_usd=np.tile([1e-2, 1e-4], (n, 1)))
    embeddings = rng.normal(size=(n, 16)).astype(np.float32)
    return dataset, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True), task


def test_learns_which_model_wins_each_category_when_the_text_does_not_tell(tmp_path):
    dataset, embeddings, task = task_dataset()
    train, test = np.arange(500), np.arange(500, 600)
    router = make_router("gbt").fit(dataset.subset(train), embeddings[train])
    prompts = [dataset.prompts[i] for i in test]
    told = [dataset.categories[i] for i in test]
    assert np.mean(router.predict(embeddings[test], prompts, told).argmax(axis=1) == task[test]) > 0.95

    untold = router.predict(embeddings[test], prompts)
    unseen = router.predict(embeddings[test], prompts, ["support"] * len(test))
    np.testing.assert_allclose(unseen, untold)  # an unseen category is no category
    # no category: the share each model wins overall, not the commonest category's winner
    np.testing.assert_allclose(untold.mean(axis=0), dataset.quality[train].mean(axis=0), atol=0.15)

    blind = make_router("gbt", categories=False).fit(dataset.subset(train), embeddings[train])
    np.testing.assert_allclose(blind.predict(embeddings[test], prompts, told), blind.predict(embeddings[test], prompts))

    loaded = load_router(router.save(tmp_path / "gbt.npz"))
    np.testing.assert_allclose(loaded.predict(embeddings[test], prompts, told),
                               router.predict(embeddings[test], prompts, told))


def test_an_ensemble_passes_categories_to_its_members():
    dataset, embeddings, task = task_dataset()
    router = make_router("ensemble", members="knn+gbt").fit(dataset.subset(np.arange(500)), embeddings[:500])
    assert router.reads_category
    told = router.win_probability(embeddings[500:], "big", "small", dataset.prompts[500:], dataset.categories[500:])
    untold = router.win_probability(embeddings[500:], "big", "small", dataset.prompts[500:])
    exam, chat = task[500:] == 0, task[500:] == 1
    assert told[exam].mean() - told[chat].mean() > 0.3 > abs(untold[exam].mean() - untold[chat].mean())


def test_cross_validation_gives_routers_the_test_queries_categories():
    dataset, embeddings, _ = task_dataset()
    evaluation = evaluate(["gbt", "knn"], dataset, embeddings, folds=5,
                          pair=("big", "small"))
    apgr = {e.name: e.metrics["apgr"] for e in evaluation.entries if e.kind == "router"}
    assert apgr["gbt"] > 0.9 and apgr["knn"] < 0.7


def test_reads_the_prompt_and_checks_the_category_count():
    dataset, embeddings, _ = two_topic_dataset(n=120)
    router = make_router("gbt").fit(dataset, embeddings)
    with pytest.raises(CrossroadsError, match="reads the prompt text"):
        router.predict(embeddings[:3])
    with pytest.raises(CrossroadsError, match="2 categories for 3 embeddings"):
        router.predict(embeddings[:3], dataset.prompts[:3], ["x", "y"])
