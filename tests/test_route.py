"""The pretrained default router ships with crossroads, loads without torch and routes any described pool."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from crossroads.cli.main import main
from crossroads.pretrained import default_router_path
from crossroads.route import route_prompt
from crossroads.routers import load_router
from crossroads.routers.provenance import read_provenance

HARD = ("Prove that for every prime p > 3, p^2 - 1 is divisible by 24, then compute the number of integer solutions "
        "of x^2 + y^2 = 5^6 and justify each step of the derivation.")
EASY = "Which word is a colour: red, dog or chair?"


def test_the_shipped_file_is_small_and_its_provenance_matches_it():
    path = default_router_path()
    assert path.stat().st_size < 3_000_000
    record = read_provenance(default_router_path())
    assert record["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["router"] == "irt" and record["command"].startswith("crossroads train ")
    assert record["training_queries_removed"] > 0 and "--exclude-questions" in record["command"]
    assert not any(spec.startswith("routellm-") or spec.endswith(("/mmlu_train.json", "/gsm8k-train.json"))
                   for spec in record["data"])  # neither benchmark seen


def test_it_loads_and_routes_without_torch(tmp_path):
    """torch made unimportable: loading the router and routing a prompt must not need it."""
    script = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
              "from crossroads.route import route_prompt\n"
              "print(route_prompt('What is 2 + 2?', 'gpt-4o;gpt-4o-mini').model)")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("gpt-4o", "gpt-4o-mini")


def test_a_hard_prompt_is_predicted_harder_and_the_strong_model_better():
    router = load_router("default").add_models(["gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"])
    from crossroads.embeddings import make_embedder

    emb = make_embedder().embed([HARD, EASY])
    quality = router.predict(emb, [HARD, EASY])
    strong, weak = router.model_column("gpt-4-1106-preview"), router.model_column("mistralai/Mixtral-8x7B-Instruct-v0.1")
    assert (quality[:, strong] > quality[:, weak]).all()
    assert quality[0, strong] < quality[1, strong] and quality[0, weak] < quality[1, weak]


def test_route_explains_each_model_and_follows_the_tolerance_rule(capsys):
    pool = "gpt-4o;gpt-4o-mini;house-7b:price=0.05/0.1,tier=small"
    assert main(["route", HARD, "--pool", pool, "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    rows = {row["model"]: row for row in decision["models"]}
    assert list(rows) == ["gpt-4o", "gpt-4o-mini", "house-7b"] and rows["house-7b"]["tier"] == "small"
    best = max(row["predicted_quality"] for row in rows.values())
    close = [row for row in rows.values() if row["predicted_quality"] >= best - 0.05]
    assert decision["model"] == min(close, key=lambda row: row["expected_cost_usd"])["model"]
    assert rows["gpt-4o"]["expected_cost_usd"] > rows["gpt-4o-mini"]["expected_cost_usd"] > rows["house-7b"]["expected_cost_usd"]
    assert "cheapest model predicted within 0.05 of the best" in decision["rule"]


def test_willingness_to_pay_zero_takes_the_best_predicted_and_a_huge_one_the_cheapest():
    pool = "gpt-4o;house-7b:price=0.05/0.1,tier=small"
    best = route_prompt(HARD, pool, rule="utility:willingness_to_pay=0")
    assert best.model == max(best.rows, key=lambda row: row["predicted_quality"])["model"]
    assert route_prompt(HARD, pool, rule="utility:willingness_to_pay=1e9").model == "house-7b"


def test_a_strong_weak_pair_and_the_table_output(capsys):
    assert main(["route", EASY, "--strong", "gpt-4o", "--weak", "gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert "gpt-4o-mini" in out and "rule: cheapest model predicted within" in out and "chosen:" in out


@pytest.mark.parametrize("argv, message", [
    (["route", "hi", "--pool", "gpt-4o;mystery"], "mystery.*price=IN/OUT,tier="),
    (["route", "hi", "--strong", "gpt-4o"], "give both --strong and --weak"),
    (["route", "hi", "--pool", "gpt-4o"], "name at least two"),
    (["route", "  ", "--pool", "gpt-4o;gpt-4o-mini"], "the prompt is empty"),
])
def test_bad_route_requests_say_what_to_fix(argv, message, capsys):
    assert main(argv) == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_a_trained_router_file_routes_only_among_its_own_models(tmp_path, capsys):
    from synthetic import two_topic_dataset

    from crossroads.embeddings import make_embedder
    from crossroads.routers import make_router

    data, emb, _ = two_topic_dataset(n=60, n_models=2, dim=384)
    path = make_router("knn").fit(data, emb, embedder=make_embedder().name).save(tmp_path / "knn.npz")
    assert main(["route", "hello", "--router-file", str(path), "--pool", "model-0:price=1/2;model-1:price=0.1/0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] in ("model-0", "model-1")
    assert main(["route", "hello", "--router-file", str(path), "--pool", "model-0:price=1;gpt-4o"]) == 2
    assert "gpt-4o" in capsys.readouterr().err and np.isfinite(emb).all()


def test_route_passes_the_category_to_a_router_that_reads_it(tmp_path, capsys):
    from test_gbt_router import task_dataset

    from crossroads.embeddings import make_embedder
    from crossroads.routers import make_router

    data, _, _ = task_dataset()
    noise = np.random.default_rng(0).normal(size=(data.n_queries, 384)).astype(np.float32)
    path = make_router("gbt").fit(data, noise, embedder=make_embedder().name).save(tmp_path / "gbt.npz")
    pool = "big:price=10/30,tier=frontier;small:price=0.1/0.3,tier=small"
    for category, model in (("exam", "big"), ("chat", "small")):
        assert main(["route", "question number 3", "--router-file", str(path), "--pool", pool, "--tolerance", "0",
                     "--category", category, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["model"] == model
