"""Learning from a server's log (partial feedback): debiased training targets, `eval --logs`, `promote`."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import numpy as np
import pytest
from cli_helpers import one_line_error
from partial_feedback import explore_probabilities, simulate_log
from serve_helpers import ServerProcess
from synthetic import make_dataset, two_topics

from crossroads.cli.main import main
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.jsonl import write_jsonl
from crossroads.errors import CrossroadsError
from crossroads.evaluate.candidate import estimate_candidate
from crossroads.objective import Objective
from crossroads.routers import make_router
from crossroads.routers.logged import accepts_unbounded, debiased

MEANS = np.array([[0.9, 0.3, 0.1], [0.3, 0.9, 0.1]])  # mean quality of A, B, C on topic X (row 0) and Y (row 1)


def bernoulli_topics(n: int, seed: int):
    """Two topics, three models with the mean qualities MEANS, 0/1 outcomes; dataset, embeddings, topic."""
    rng = np.random.default_rng(seed)
    _, embeddings, topic = two_topics(n, 3, seed=seed)
    quality = (rng.random((n, 3)) < MEANS[topic]).astype(float)
    dataset = make_dataset(quality)
    dataset.models = [ModelInfo(name, price, 2 * price) for name, price in zip("ABC", (1.0, 1.0, 0.1))]
    return dataset, embeddings, topic


def favouring(topic: np.ndarray) -> np.ndarray:
    """A logging policy that sends topic X to A (where A is good) and topic Y to C (the worst)."""
    return np.where(topic == 0, 0, 2)


# -- debiased targets ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dr", "ips"])
def test_debiased_targets_are_unbiased_where_the_observed_cells_are_not(method):
    full, embeddings, topic = bernoulli_topics(8000, seed=1)
    logs = simulate_log(full, explore_probabilities(favouring(topic), 3, 0.2), np.random.default_rng(2))
    truth = full.quality.mean(axis=0)
    naive = np.nanmean(logs.quality, axis=0)
    assert naive[0] - truth[0] > 0.2  # A is seen mostly where it is good
    targets = debiased(logs, embeddings, method=method)
    assert not targets.logged and not np.isnan(targets.quality).any()
    for rows in (topic >= 0, topic == 0, topic == 1):  # overall and per topic (what a router needs)
        mean, spread = targets.quality[rows].mean(axis=0), targets.quality[rows].std(axis=0)
        assert (np.abs(mean - full.quality[rows].mean(axis=0)) < 4 * spread / np.sqrt(rows.sum()) + 0.005).all()
    if method == "dr":  # the direct model takes most of the variance away
        assert np.abs(targets.quality.mean(axis=0) - truth).max() < 0.03


def test_shadow_outcomes_are_kept_as_they_are_and_rows_without_propensity_get_the_direct_model():
    full, embeddings, topic = bernoulli_topics(600, seed=3)
    logs = simulate_log(full, explore_probabilities(favouring(topic), 3, 0.3), np.random.default_rng(4),
                        shadow=0.2, drop_propensity=0.1)
    targets = debiased(logs, embeddings).quality
    observed = np.isfinite(logs.quality)
    served = np.zeros_like(observed)
    served[np.arange(len(topic)), logs.served] = True
    shadow = observed & ~served
    assert shadow.sum() > 50 and np.array_equal(targets[shadow], logs.quality[shadow])
    no_propensity = np.isnan(logs.propensity)
    assert no_propensity.sum() > 20
    assert ((targets[no_propensity] >= 0) & (targets[no_propensity] <= 1)).all()
    with_weight = ~no_propensity & (logs.propensity < 0.5)  # explored choices: corrections of 1/p > 2
    assert (np.abs(targets[served & with_weight[:, None]]) > 1).any()
    assert (debiased(logs, embeddings, clip=True).quality <= 1).all()


def test_debiasing_refuses_what_it_cannot_use():
    full, embeddings, topic = bernoulli_topics(100, seed=5)
    with pytest.raises(CrossroadsError, match="full information already"):
        debiased(full, embeddings)
    logs = simulate_log(full, explore_probabilities(favouring(topic), 3, 0.2), np.random.default_rng(0))
    with pytest.raises(CrossroadsError, match="choose one of dr, ips, dm"):
        debiased(logs, embeddings, method="magic")
    with pytest.raises(CrossroadsError, match="99 embeddings for 100 queries"):
        debiased(logs, embeddings[:99])
    with pytest.raises(CrossroadsError, match="no observed outcome"):
        debiased(replace(logs, quality=np.full_like(logs.quality, np.nan)), embeddings)
    assert accepts_unbounded("knn") and accepts_unbounded("ensemble") and not accepts_unbounded("mlp")
    assert not accepts_unbounded("ensemble", "knn+ridge+gbt")


def test_a_router_trained_on_debiased_logs_beats_the_logging_policy_and_the_naive_one():
    full, embeddings, topic = bernoulli_topics(3000, seed=6)
    train, test = np.arange(2000), np.arange(2000, 3000)
    logs = simulate_log(full.subset(train), explore_probabilities(favouring(topic[train]), 3, 0.2),
                        np.random.default_rng(7))
    true_means = MEANS[topic[test]]  # what each model is worth on each held-out query

    def value(router):
        return true_means[np.arange(len(test)), router.predict(embeddings[test]).argmax(axis=1)].mean()

    logging_value = true_means[np.arange(len(test)), favouring(topic[test])].mean()
    learnt = value(make_router("knn", k=50).fit(debiased(logs, embeddings[train]), embeddings[train]))
    naive = value(make_router("knn", k=50).fit(replace(logs, served=None, propensity=None), embeddings[train]))
    best = true_means.max(axis=1).mean()
    assert learnt > logging_value + 0.3 and learnt > best - 0.02, (learnt, logging_value, best)
    assert learnt >= naive


# -- off-policy estimates of candidates ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimates_of_fixed_and_learnt_policies_cover_the_truth(seed):
    full, embeddings, topic = bernoulli_topics(4000, seed=10 + seed)
    logs = simulate_log(full, explore_probabilities(favouring(topic), 3, 0.3), np.random.default_rng(seed))
    objective = Objective(quality=1.0, cost=0.5)
    rewards_full = _true_rewards(full, objective)
    policies = {"A": np.zeros(4000, int), "B": np.ones(4000, int), "oracle": np.where(topic == 0, 0, 1)}
    for name, chosen in policies.items():
        result = estimate_candidate(logs, chosen, objective, replicates=200, seed=seed)
        rows = np.arange(4000)
        for metric, truth in (("quality", full.quality[rows, chosen].mean()),
                              ("reward", rewards_full[rows, chosen].mean())):
            for estimator in ("snips", "dr"):
                estimate = result.candidate[metric][estimator]
                assert estimate.n == 4000 and result.matching[metric] > 30
                assert estimate.low - 0.01 <= truth <= estimate.high + 0.01, (name, metric, estimator, estimate, truth)
    logged = estimate_candidate(logs, policies["A"], objective, replicates=50).logged["quality"]
    assert logged.value == pytest.approx(full.quality[np.arange(4000), logs.served].mean())


def _true_rewards(full: RoutingDataset, objective: Objective) -> np.ndarray:
    """Every cell's reward under ``objective``, scored as the estimates score the served cell."""
    from crossroads.evaluate.candidate import logged_rewards

    columns = []
    for j in range(full.n_models):
        served = replace(full, served=np.full(full.n_queries, j), propensity=np.ones(full.n_queries))
        columns.append(logged_rewards(served, objective))
    return np.stack(columns, axis=1)


def test_too_few_matching_decisions_or_no_propensities_give_a_note_instead_of_a_number():
    full, embeddings, topic = bernoulli_topics(400, seed=20)
    logs = simulate_log(full, explore_probabilities(favouring(topic), 3, 0.05), np.random.default_rng(0))
    rare = estimate_candidate(logs, np.ones(400, int), Objective(), replicates=20).candidate["quality"]["dr"]
    assert rare.value is None and "chose as the candidate does" in rare.note
    blind = replace(logs, propensity=np.full(400, np.nan))
    none = estimate_candidate(blind, np.ones(400, int), Objective(), replicates=20).candidate["reward"]["ips"]
    assert none.value is None and "with a logged propensity" in none.note and "no propensity" in none.note
    certain = replace(logs, propensity=np.ones(400))
    sure = estimate_candidate(certain, np.zeros(400, int), Objective(), replicates=20).candidate["quality"]["snips"]
    assert sure.value is None and "probability 1" in sure.note
    with pytest.raises(CrossroadsError, match="export one with `crossroads logs export`"):
        estimate_candidate(full, np.zeros(400, int), Objective())


# -- the commands, with real embeddings and a real server ------------------------------------------------------
MATH = ["What is {} times {}?", "Solve for x: {}x + {} = 20.", "Compute {}% of {}.", "Divide {} by {}."]
POEMS = ["Write a haiku about {} autumn leaves and {} birds.", "Compose a short poem about {} waves and {} ships.",
         "Write a limerick about {} cats and {} hats.", "A poem about {} moons and {} stars, please."]
PRICED = [ModelInfo("big", 10.0, 30.0), ModelInfo("small", 0.1, 0.3)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Logged traffic of a route whose router sends math to `small` and poems to `big` (wrong both ways),
    explore 0.3; the router files of that route (`bad.npz`) and of a candidate that has it right (`good.npz`)."""
    from crossroads.embeddings import make_embedder

    folder = tmp_path_factory.mktemp("learn")
    rng = np.random.default_rng(0)
    n = 400
    is_math = np.arange(n) % 2 == 0
    prompts = [(MATH if m else POEMS)[i % 4].format(i, i + 3) for i, m in enumerate(is_math)]
    means = np.where(is_math[:, None], [0.9, 0.2], [0.3, 0.9])
    quality = (rng.random((n, 2)) < means).astype(float)
    cost = np.tile([3e-3, 3e-5], (n, 1))
    full = RoutingDataset([f"q{i}" for i in range(n)], prompts, ["math" if m else "poem" for m in is_math],
                          ["logs/auto"] * n, PRICED, quality, cost)
    embedder = make_embedder("minilm-onnx")  # the tests' private cache: the commands below find these embeddings
    embeddings = embedder.embed(prompts)
    wrong = replace(full, quality=np.where(is_math[:, None], [0.0, 1.0], [1.0, 0.0]))
    bad = make_router("knn", k=10).fit(wrong, embeddings, embedder=embedder.name).save(folder / "bad.npz")
    right = replace(full, quality=np.where(is_math[:, None], [1.0, 0.0], [0.0, 1.0]))
    good = make_router("knn", k=10).fit(right, embeddings, embedder=embedder.name).save(folder / "good.npz")
    logs = simulate_log(full, explore_probabilities(np.where(is_math, 1, 0), 2, 0.3), rng, shadow=0.0)
    path = write_jsonl(logs, folder / "logs.jsonl")
    truth = {"good": np.where(is_math, quality[:, 0], quality[:, 1]).mean(),
             "bad": np.where(is_math, quality[:, 1], quality[:, 0]).mean()}
    return {"logs": str(path), "bad": str(bad), "good": str(good), "truth": truth, "folder": folder}


def test_eval_logs_writes_the_candidates_estimates_beside_the_logged_policys(world, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--logs", world["logs"], "--router-file", world["good"],
                 "--replicates", "100", "--out", str(out)]) == 0
    result = json.loads((out / "candidate.json").read_text())
    assert result["decisions"] == 400 and result["chosen"]["big"] == 200 and result["chosen"]["small"] == 200
    dr = result["candidate"]["quality"]["dr"]
    assert dr["low"] <= world["truth"]["good"] <= dr["high"]
    logged = result["logged"]["quality"]
    assert logged["high"] < dr["low"]  # the log shows the candidate better than what was served
    assert "candidate picks: big 200, small 200" in capsys.readouterr().out
    assert main(["eval", "--logs", world["logs"]]) == 2
    assert "--logs and --router-file go together" in one_line_error(capsys)
    assert main(["eval", "--logs", str(tmp_path / "none.jsonl"), "--router-file", world["good"]]) == 2
    assert "no such file" in one_line_error(capsys)


def test_promote_replaces_the_route_only_when_the_candidate_is_shown_better(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LFL_ADMIN_KEY", "s3cret")
    models = [{"name": m.name, "base_url": "http://127.0.0.1:9/v1", "price_per_mtok_in": m.price_per_mtok_in,
               "price_per_mtok_out": m.price_per_mtok_out} for m in PRICED]
    config = {"models": models, "routes": {"auto": {"router_file": world["bad"], "explore": 0.3},
                                           "bandit": {"learner": "ucb"}},
              "store": f"sqlite://{tmp_path / 'store.db'}", "security": {"admin_key_env": "LFL_ADMIN_KEY"}}
    with ServerProcess(config, tmp_path, env={"LFL_ADMIN_KEY": "s3cret"}) as server:
        config_text = server.config_path.read_text()
        base = ["promote", "--server", server.url, "--route", "auto", "--logs", world["logs"],
                "--admin-key-env", "LFL_ADMIN_KEY", "--replicates", "100"]
        math_prompt = MATH[0].format(7, 9)
        before = _share_big(server.url, math_prompt)
        assert before < 0.4  # the bad router sends math to small
        assert main([*base, "--router-file", world["bad"]]) == 1  # the logging policy itself: not shown better
        printed = capsys.readouterr().out
        assert "not promoted" in printed and "route auto unchanged" in printed
        assert _share_big(server.url, math_prompt) < 0.4
        assert main([*base, "--router-file", world["good"]]) == 0
        printed = capsys.readouterr().out
        assert f"router_file: {world['good']}" in printed and "is unchanged" in printed
        assert _share_big(server.url, math_prompt) > 0.6
        assert server.config_path.read_text() == config_text
        reloaded = _reload(server.url, None)  # a plain reload keeps the promoted file
        assert reloaded.status_code == 200 and reloaded.json()["overrides"] == {"auto": world["good"]}
        assert reloaded.json()["config_file_changed"] is False
        assert _share_big(server.url, math_prompt) > 0.6
        # bad input: nothing changes
        wrong_route = _reload(server.url, {"routes": {"nope": {"router_file": world["bad"]}}})
        assert wrong_route.status_code == 400 and "routes are auto, bandit" in wrong_route.json()["error"]["message"]
        not_a_router = tmp_path / "notes.npz"
        not_a_router.write_text("hello")
        refused = _reload(server.url, {"routes": {"auto": {"router_file": str(not_a_router)}}})
        assert refused.status_code == 400 and "not a crossroads router file" in refused.json()["error"]["message"]
        learner = _reload(server.url, {"routes": {"bandit": {"router_file": world["good"]}}})
        assert learner.status_code == 400 and "decides with the learner" in learner.json()["error"]["message"]
        relative = _reload(server.url, {"routes": {"auto": {"router_file": "good.npz"}}})
        assert relative.status_code == 400 and "absolute path" in relative.json()["error"]["message"]
        assert _share_big(server.url, math_prompt) > 0.6
        assert main([*base[:4], "nope", *base[5:], "--router-file", world["good"]]) == 2
        assert "no decision of route 'nope'; their routes: auto" in one_line_error(capsys)
        assert main([*base, "--router-file", str(not_a_router)]) == 2
        assert "not a crossroads router file" in one_line_error(capsys)


def _reload(url: str, body: dict | None) -> httpx.Response:
    return httpx.post(url + "/admin/reload", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60)


def _share_big(url: str, prompt: str, n: int = 30) -> float:
    picks = [httpx.post(url + "/v1/route", json={"model": "auto", "prompt": prompt}, timeout=30).json()["model"]
             for _ in range(n)]
    return picks.count("big") / n


def test_train_on_a_log_debiases_it_and_says_so(world, tmp_path, capsys):
    from crossroads.routers import load_router

    out = tmp_path / "retrained.npz"
    assert main(["train", "-d", f"logs:{world['logs']}", "--router", "knn:k=20", "--out", str(out)]) == 0
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "logged partial feedback (400 of 400 queries labelled): training on DR debiased targets" in err
    assert "clipped" not in err
    good = load_router(world["good"])
    retrained = load_router(out)
    assert retrained.models_ == ["big", "small"] and retrained.embedder_ == good.embedder_
    assert main(["train", "-d", f"logs:{world['logs']}", "--router", "mlp", "--out", str(tmp_path / "m.npz")]) == 0
    assert "clipped to [0, 1] for mlp" in " ".join(capsys.readouterr().err.split())
