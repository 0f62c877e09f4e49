"""The own-traffic loop with real parts: the twin, `crossroads serve` as a process, replay (openai SDK), report."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import yaml
from postgres_server import fresh_database
from serve_helpers import ServerProcess

from crossroads.cli.main import main
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.jsonl import write_jsonl
from crossroads.upstream.fake import FakeUpstream
from crossroads.upstream.recorded import Recording

MODELS = [ModelInfo("cheap", 0.5, 1.0), ModelInfo("middle", 2.0, 6.0), ModelInfo("dear", 10.0, 30.0)]


def recorded_dataset(n: int = 80, seed: int = 0) -> RoutingDataset:
    """``n`` prompts on two topics, three priced models with recorded costs, answers and qualities."""
    rng = np.random.default_rng(seed)
    categories = ["math" if i % 2 else "chat" for i in range(n)]
    quality = (rng.random((n, 3)) < np.array([0.3, 0.6, 0.9])).astype(float)
    tokens_in = rng.integers(20, 200, size=n)
    tokens_out = rng.integers(10, 400, size=(n, 3))
    price_in = np.array([m.price_per_mtok_in for m in MODELS])
    price_out = np.array([m.price_per_mtok_out for m in MODELS])
    prompts = [f"question {i} about {categories[i]}: " + "word " * int(tokens_in[i] * 4 // 5) for i in range(n)]
    in_tokens = np.array([len(p) // 4 + (len(p) % 4 > 0) for p in prompts])
    cost = (in_tokens[:, None] * price_in + tokens_out * price_out) / 1e6
    responses = [[f"answer {i} from {m.name}" for m in MODELS] for i in range(n)]
    return RoutingDataset([f"q{i}" for i in range(n)], prompts, categories, ["synthetic"] * n, MODELS, quality, cost,
                          responses=responses)


@pytest.fixture(scope="module")
def dataset_spec(tmp_path_factory):
    path = write_jsonl(recorded_dataset(), tmp_path_factory.mktemp("twin") / "recorded.jsonl")
    return f"crossroads:{path}"


def test_twin_answers_as_recorded_through_the_openai_sdk(dataset_spec):
    import openai

    recording = Recording.load([dataset_spec])
    dataset = recording.dataset
    with FakeUpstream(recording=recording).serve() as twin:
        client = openai.OpenAI(base_url=twin.base_url, api_key="x", max_retries=0)
        answer = client.chat.completions.create(model="middle",
                                                messages=[{"role": "user", "content": dataset.prompts[3]}])
        assert answer.choices[0].message.content == "answer 3 from middle"
        usage = answer.usage
        cost = (usage.prompt_tokens * 2.0 + usage.completion_tokens * 6.0) / 1e6
        assert cost == pytest.approx(dataset.cost_usd[3, 1], abs=6.0 / 1e6)  # within one output token's price
        assert cost == pytest.approx(recording.cost(3, "middle"))
        chunks = list(client.chat.completions.create(
            model="dear", stream=True, messages=[{"role": "user", "content": dataset.prompts[5]}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer 5 from dear"
        assert chunks[-1].usage.completion_tokens == recording.answer("dear", dataset.prompts[5]).tokens_out
        with pytest.raises(openai.NotFoundError, match="answers only the 80 prompts of its dataset"):
            client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "something else"}])
        with pytest.raises(openai.NotFoundError, match="recording holds cheap, middle, dear"):
            client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": dataset.prompts[0]}])


def test_duplicate_prompts_keep_the_first_and_missing_outcomes_are_404():
    dataset = recorded_dataset(6)
    dataset.prompts[4] = dataset.prompts[1]
    dataset.quality[2, 0] = np.nan
    recording = Recording(dataset)
    assert recording.dataset.n_queries == 5 and recording.answer("cheap", dataset.prompts[1]).row == 1
    with pytest.raises(Exception, match="no recorded outcome for query 'q2'"):
        recording.answer("cheap", dataset.prompts[2])
    assert np.isnan(recording.cost_matrix()[2, 0])


def test_prices_are_derived_from_recorded_costs_when_the_dataset_has_none():
    dataset = recorded_dataset(40)
    dataset.models = [ModelInfo(m.name) for m in MODELS]
    recording = Recording(dataset)
    for j, name in enumerate(dataset.model_names):
        assert recording.prices[name].basis == "mean recorded cost"
        assert np.nanmean(recording.cost_matrix()[:, j]) == pytest.approx(dataset.cost_usd[:, j].mean(), rel=0.02)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_serve_replay_report_loop(backend, dataset_spec, tmp_path, capsys, request):
    recording = Recording.load([dataset_spec])
    store = (f"sqlite://{tmp_path / 'store.db'}" if backend == "sqlite"
             else fresh_database(request.getfixturevalue("postgres_url")))
    with FakeUpstream(recording=recording).serve() as twin:
        config = recording.serve_config(twin.base_url)
        config["routes"]["bandit"]["explore"] = 0.2
        config["store"] = store
        with ServerProcess(config, tmp_path) as server:
            argv = ["replay", "-d", dataset_spec, "--url", server.url + "/v1", "--route", "bandit",
                    "--requests", "60", "--concurrency", "4", "--seed", "1", "--out", str(tmp_path / "replay.json")]
            assert main(argv) == 0
    replayed = json.loads((tmp_path / "replay.json").read_text())
    assert replayed["summary"]["answered"] == 60 and replayed["summary"]["feedback_sent"] == 60
    assert main(["report", "--store", store, "--out", str(tmp_path / "report"), "--replicates", "50"]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["window"]["decisions"] == 60
    assert report["savings"]["served_usd"] == pytest.approx(replayed["summary"]["spend_usd"])
    served = Counter(r["model"] for r in replayed["requests"])
    assert {row["name"]: row["requests"] for row in report["breakdown"]["model"]} == dict(served)
    assert report["quality"]["served"]["value"] == pytest.approx(replayed["summary"]["mean_quality_sent"])
    assert {row["name"] for row in report["breakdown"]["category"]} == {"math", "chat"}
    # each model's spend over the replayed queries is known: the estimate's interval holds it (give or take a
    # quarter: 60 requests, and the order a loaded machine answers them in changes what the bandit served)
    for model, truth in replayed["truth"]["always"].items():
        spend = report["savings"]["models"][model]["spend_usd"]
        assert spend["low"] * 0.75 <= truth["spend_usd"] <= spend["high"] * 1.25, model


def test_replay_errors_are_one_line(dataset_spec, tmp_path, capsys):
    other = write_jsonl(recorded_dataset(10, seed=9), tmp_path / "other.jsonl")
    recording = Recording.load([dataset_spec])
    with FakeUpstream(recording=recording).serve() as twin:
        config = {**recording.serve_config(twin.base_url), "store": f"sqlite://{tmp_path / 'store.db'}"}
        with ServerProcess(config, tmp_path) as server:
            url = server.url + "/v1"
            base = ["replay", "--url", url, "--requests", "3"]
            cases = [
                ([*base, "-d", dataset_spec, "--route", "nope"], "unknown model 'nope'"),
                ([*base, "-d", f"crossroads:{other}", "--route", "bandit"], "none of the 3 requests was answered"),
                (["replay", "--url", "http://127.0.0.1:9/v1", "-d", dataset_spec, "--route", "bandit"],
                 "is `crossroads serve` running there?"),
                ([*base, "-d", dataset_spec, "--route", "bandit", "--feedback", "nonsense"], "nonsense"),
            ]
            for argv, message in cases:
                assert main(argv) == 2, argv
                err = capsys.readouterr().err
                assert message in err and len(err.strip().splitlines()) == 1, err


def test_twin_cli_serves_and_writes_a_config_that_checks(dataset_spec, tmp_path):
    import subprocess
    import sys

    import httpx

    from crossroads.upstream.servers import free_port

    port, config = free_port(), tmp_path / "twin.yaml"
    process = subprocess.Popen([sys.executable, "-m", "crossroads.cli.main", "twin", "-d", dataset_spec, "--port",
                                str(port), "--write-config", str(config)], stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert f"twin of 80 queries x 3 models (cheap, middle, dear) at http://127.0.0.1:{port}/v1" in banner
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        assert [m["id"] for m in models] == ["cheap", "middle", "dear"]
        assert main(["config", "check", str(config)]) == 0
        taken = subprocess.run([sys.executable, "-m", "crossroads.cli.main", "twin", "-d", dataset_spec, "--port",
                                str(port)], capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and "address already in use" in taken.stderr.lower()
    finally:
        process.kill()
        process.wait(timeout=10)


def test_twin_cli_writes_a_config_serve_accepts(dataset_spec, tmp_path, capsys):
    from crossroads.serve.config import parse_config

    recording = Recording.load([dataset_spec])
    config = parse_config(recording.serve_config("http://127.0.0.1:8001/v1"))
    assert [m.name for m in config.models] == ["cheap", "middle", "dear"]
    assert config.model("dear").price_per_mtok_out == 30.0
    assert main(["twin", "-d", "nosuchformat:x", "--write-config", str(tmp_path / "t.yaml")]) == 2
    assert "nosuchformat" in capsys.readouterr().err and not (tmp_path / "t.yaml").exists()
    assert yaml.safe_load(yaml.safe_dump(recording.serve_config("u")))["default_route"] == "bandit"
