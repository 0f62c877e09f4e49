"""The irt router places models it never saw by their descriptors, and refines them with probe outcomes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from crossroads.data.dataset import ModelInfo, RoutingDataset, combine
from crossroads.data.descriptors import ModelDescriptor
from crossroads.errors import CrossroadsError
from crossroads.evaluate.harness import evaluate
from crossroads.routers import load_router, make_router

TIER_ABILITY = {"small": -1.0, "medium": 0.0, "large": 1.0, "frontier": 2.0}
PRICE = {"small": 0.2, "medium": 0.6, "large": 2.0, "frontier": 15.0}


def world(models: list[ModelDescriptor], n: int, seed: int, true_ability: dict | None = None, source: str = "w"):
    """Queries whose difficulty is the first embedding coordinate; P(correct) = sigmoid(ability - difficulty)."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    difficulty = 8 * emb[:, 0]
    ability = np.array([(true_ability or {}).get(m.name, TIER_ABILITY[m.tier]) for m in models])
    p = 1 / (1 + np.exp(-(ability[None, :] - difficulty[:, None])))
    quality = (rng.random(p.shape) < p).astype(float)
    data = RoutingDataset(
        query_ids=[f"{source}{i}" for i in range(n)], prompts=[f"question {i} of {source}" for i in range(n)],
        categories=["c"] * n, sources=[source] * n, models=[m.model_info() for m in models], quality=quality,
        cost_usd=np.tile([PRICE[m.tier] * 1e-3 for m in models], (n, 1)))
    return data, emb.astype(np.float32), p


def described(name: str, tier: str) -> ModelDescriptor:
    return ModelDescriptor(name, tier=tier, price_per_mtok_in=PRICE[tier], price_per_mtok_out=PRICE[tier])


POOL = [described("s1", "small"), described("m1", "medium"), described("l1", "large"), described("f1", "frontier"),
        described("s2", "small"), described("l2", "large")]
NEWCOMER = described("new-large", "large")
#: Models of one tier differ (as real ones do): the spread the probes' prior learns from.
TRAINED_ABILITY = {"s1": -1.6, "s2": -0.4, "m1": 0.0, "l1": 0.5, "l2": 1.5, "f1": 2.0}


@pytest.fixture(scope="module")
def fitted():
    data, emb, _ = world(POOL, 1500, seed=0, true_ability=TRAINED_ABILITY)
    return make_router("irt", features="price+tier", rank=0, learning_rate=0.1, steps=300).fit(data, emb, embedder="e"), data, emb


def test_a_model_never_trained_on_is_placed_by_its_descriptors(fitted):
    router, _, _ = fitted
    test, emb, truth = world(POOL + [NEWCOMER], 400, seed=1)
    router.add_models([NEWCOMER])
    quality = router.predict(emb, test.prompts)
    new = quality[:, router.model_column("new-large")]
    assert spearmanr(new, truth[:, -1]).statistic > 0.9
    # between the medium and the frontier model, as its tier says
    assert quality[:, router.model_column("m1")].mean() < new.mean() < quality[:, router.model_column("f1")].mean()


def test_probe_outcomes_correct_a_misleading_descriptor(fitted):
    """A model sold as small that is really frontier-strong: probes pull its predictions toward the truth."""
    router, _, _ = fitted
    sleeper = described("sleeper", "small")
    truth_ability = {**TRAINED_ABILITY, "sleeper": TIER_ABILITY["frontier"]}
    probes, probe_emb, _ = world(POOL + [sleeper], 150, seed=2, true_ability=truth_ability, source="probe")
    test, emb, truth = world(POOL + [sleeper], 400, seed=3, true_ability=truth_ability, source="test")
    errors = []
    for probe_rows in (0, 150):
        router.add_models([sleeper], probes.subset(np.arange(probe_rows)) if probe_rows else None,
                          probe_emb[:probe_rows] if probe_rows else None)
        predicted = router.predict(emb, test.prompts)[:, router.model_column("sleeper")]
        errors.append(np.abs(predicted - truth[:, -1]).mean())
    assert errors[1] < 0.5 * errors[0]


def test_saved_router_keeps_added_models(fitted, tmp_path):
    router, data, emb = fitted
    router.add_models([described("extra", "medium")])
    loaded = load_router(router.save(tmp_path / "irt.npz"))
    assert loaded.models_ == router.models_
    np.testing.assert_allclose(loaded.predict(emb[:20], data.prompts[:20]), router.predict(emb[:20], data.prompts[:20]))


def test_aliases_across_datasets_share_one_model():
    """RouterBench's and MMLU-Pro's names for Mixtral-8x7B-Instruct are one model to the router."""
    a, emb_a, _ = world([described("s1", "small")], 50, seed=4, source="a")
    a.models = [ModelInfo("mistralai/mixtral-8x7b-chat", 0.6, 0.6)]
    b, emb_b, _ = world([described("s1", "small")], 50, seed=5, source="b")
    b.models = [ModelInfo("Mixtral-8x7B-Instruct-v0.1", 0.6, 0.6)]
    router = make_router("irt", steps=20).fit(combine([a, b]), np.vstack([emb_a, emb_b]))
    assert router.residual_keys_ == ["mistralai/Mixtral-8x7B-Instruct-v0.1"]


def test_training_models_described_by_nothing_still_fit():
    data, emb, _ = world(POOL[:2], 100, seed=6)
    data.models = [ModelInfo("house-model-a"), ModelInfo("house-model-b")]
    router = make_router("irt", steps=50).fit(data, emb)
    assert np.isfinite(router.predict(emb[:5], data.prompts[:5])).all()
    with pytest.raises(CrossroadsError, match="house-model-c.*price=IN/OUT,tier="):
        router.add_models(["house-model-c"])


def test_held_out_evaluation_on_a_pool_of_new_models():
    train, train_emb, _ = world(POOL, 800, seed=7, source="train")
    newcomers = [described("n-small", "small"), described("n-frontier", "frontier")]
    test, test_emb, _ = world(newcomers, 400, seed=8, source="test")
    run = evaluate(["irt:features=price+tier,rank=0,learning_rate=0.1,steps=300"], train, train_emb,
                   test=(test, test_emb), pair=("n-frontier", "n-small"))
    by_name = {entry.name: entry for entry in run.entries}
    assert by_name["irt:features=price+tier,rank=0,learning_rate=0.1,steps=300"].metrics["apgr"] > by_name["random"].metrics["apgr"] + 0.1
    with pytest.raises(CrossroadsError, match="knn predict only for models they trained on.*irt"):
        evaluate(["knn"], train, train_emb, test=(test, test_emb))


def test_bad_parameters_are_named():
    with pytest.raises(CrossroadsError, match="features='price\\+colour'"):
        make_router("irt", features="price+colour")
    with pytest.raises(CrossroadsError, match="irt rank must be a whole number >= 0"):
        make_router("irt", rank=-1)


def _hard_easy(models: list[ModelDescriptor], n: int, seed: int, source: str) -> RoutingDataset:
    """Hard proofs only frontier models solve, easy greetings every model handles."""
    rng = np.random.default_rng(seed)
    hard = rng.random(n) < 0.5
    prompts = [f"Prove that the sum of the first {i} odd numbers is a perfect square, with an integral bound."
               if h else f"Say good morning to my neighbour number {i}." for i, h in enumerate(hard)]
    quality = np.ones((n, len(models)))
    for j, m in enumerate(models):
        quality[hard, j] = (rng.random(hard.sum()) < {"small": 0.05, "medium": 0.4, "large": 0.7, "frontier": 0.95}[m.tier])
    return RoutingDataset([f"{source}{i}" for i in range(n)], prompts, ["c"] * n, [source] * n,
                          [m.model_info() for m in models], quality,
                          np.tile([PRICE[m.tier] * 1e-4 for m in models], (n, 1)))


def test_eval_cli_scores_a_held_out_pool_of_new_models_with_and_without_probes(tmp_path):
    import json

    from crossroads.cli.main import main
    from crossroads.data.jsonl import write_jsonl

    train = write_jsonl(_hard_easy(POOL[:4], 120, 0, "train"), tmp_path / "train.jsonl")
    test = write_jsonl(_hard_easy([described("n-small", "small"), described("n-frontier", "frontier")], 80, 1, "test"),
                       tmp_path / "test.jsonl")
    spec = "irt:rank=0,learning_rate=0.1,steps=200"
    for probes in (0, 10):
        out = tmp_path / f"probes{probes}"
        assert main(["eval", "--train", f"crossroads:{train}", "--test", f"crossroads:{test}", "--router", spec,
                     "--strong", "n-frontier", "--weak", "n-small", "--probes", str(probes), "--out", str(out)]) == 0
        run = json.loads((out / "metrics.json").read_text())
        assert run["setup"]["probes"] == probes and run["setup"]["queries"] == 80 - probes
        assert run["entries"][spec]["apgr"] > run["entries"]["random"]["apgr"] + 0.1
    assert main(["eval", "--train", f"crossroads:{train}", "--test", f"crossroads:{test}", "--router", spec,
                 "--probes", "80", "--out", str(tmp_path / "bad")]) == 2
