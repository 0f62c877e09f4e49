"""``crossroads eval --cascade``: cascades beside the routers in one metrics.json, on the RouterBench fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from crossroads.cli.main import main

ROUTERBENCH_FIXTURE = f"routerbench:{Path(__file__).parent / 'fixtures' / 'routerbench'}"


def test_eval_adds_cascades_to_the_routers_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["eval", "--dataset", ROUTERBENCH_FIXTURE, "--router", "knn:k=5", "--cv", "3", "--cascade", "routing",
                 "--cascade", "fixed", "--verifier", "agreement", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    entries = metrics["entries"]
    routing, fixed = entries["cascade-routing:agreement+knn:k=5"], entries["cascade-fixed:agreement+knn:k=5"]
    for entry in (routing, fixed):
        assert entry["kind"] == "cascade"
        assert {"aiq", "best_quality", "cost_share_at_97", "mean_calls_max"} <= set(entry)
        curve = entry["cost_curve"]
        assert len(curve["mean_cost_usd"]) == len(curve["mean_quality"]) > 10
        # a cascade never costs less than its cheapest call nor returns better than the oracle
        assert min(curve["mean_cost_usd"]) > 0 and max(curve["mean_quality"]) <= entries["oracle"]["mean_quality"]
    assert 1.0 <= routing["mean_calls_max"] <= 3.0
    assert metrics["setup"]["cascades"]["router"] == "knn:k=5"
    at_97 = metrics["setup"]["cascades"]["routing_at_97"]["cascade-routing:agreement+knn:k=5"]
    if at_97 is not None:  # the settings a served route's `cascade:` can take, per answer group
        assert at_97["willingness_to_pay"] >= 0 and at_97["groups"]
        for settings in at_97["groups"].values():
            assert set(settings) == {"resolve", "opening", "difficulty"} and settings["opening"] >= 1
    assert list(entries).index("knn:k=5") < list(entries).index("cascade-routing:agreement+knn:k=5") < list(
        entries).index("random")
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cascade-routing" in capsys.readouterr().out
    assert np.isfinite(routing["aiq"])


def test_cascades_refuse_a_train_test_split(tmp_path, capsys):
    assert main(["eval", "--train", ROUTERBENCH_FIXTURE, "--test", ROUTERBENCH_FIXTURE, "--router", "knn",
                 "--cascade", "routing", "--out", str(tmp_path)]) == 2
    assert "--cascade is cross-validated" in capsys.readouterr().err


def test_train_saves_a_verifier_that_a_cascade_route_serves_with(tmp_path, capsys):
    from crossroads.grading.verifiers import LearnedVerifier, load_verifier
    from crossroads.serve.config import parse_config
    from crossroads.serve.gateway import Gateway

    verifier_path = tmp_path / "verifier.npz"
    assert main(["train", "--dataset", ROUTERBENCH_FIXTURE, "--router", "knn:k=5", "--out", str(tmp_path / "r.npz"),
                 "--verifier-out", str(verifier_path)]) == 0
    verifier = load_verifier(verifier_path)
    assert isinstance(verifier, LearnedVerifier) and np.isfinite(verifier.coef_).all()
    assert "saved LearnedVerifier" in capsys.readouterr().out
    config = parse_config({"models": [{"name": "a", "base_url": "http://fake-upstream/v1"},
                                      {"name": "b", "base_url": "http://fake-upstream/v1"}],
                           "routes": {"c": {"router_file": "default", "cascade": {"verifier": str(verifier_path)}}},
                           "store": f"sqlite:///{tmp_path}/store.db"})
    gateway = Gateway(config)
    try:
        assert isinstance(gateway.cascades["c"].verifier, LearnedVerifier)
    finally:
        gateway.store.close()


def test_train_refuses_a_verifier_without_responses(tmp_path, capsys):
    fixture = f"routellm-mmlu:{Path(__file__).parent / 'fixtures' / 'routellm' / 'mmlu'}"
    code = main(["train", "--dataset", fixture, "--router", "knn:k=5", "--out", str(tmp_path / "r.npz"),
                 "--verifier-out", str(tmp_path / "v.npz")])
    assert code == 2 and "keeps no responses" in capsys.readouterr().err
