"""The whole own-traffic loop as a user runs it, every part real: serve -> replay -> label -> export -> train ->
eval --logs and report --candidate -> promote, on SQLite and on PostgreSQL.

The twin answers two kinds of prompt; the route's router has them the wrong way round
(math to the small model, which fails it; poems to the big one, which writes them badly),
with ``explore`` and ``shadow`` so that its log says what the other model would have done.
A router trained on that log must put them right, be shown better off-policy, and be promoted.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import httpx
import numpy as np
import pytest
from postgres_server import fresh_database
from serve_helpers import ServerProcess

from crossroads.cli.main import main
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.importers import load_dataset
from crossroads.data.jsonl import write_jsonl
from crossroads.routers import load_router, make_router
from crossroads.store import open_store
from crossroads.upstream.fake import FakeUpstream
from crossroads.upstream.recorded import Recording

MODELS = [ModelInfo("big", 10.0, 30.0), ModelInfo("small", 0.1, 0.3)]
MATH = ["What is {} plus {}? Show the sum.", "Compute {} times {} and give the product.",
        "Solve for x: x minus {} equals {}.", "What is {} divided by {}, to two decimals?"]
POEMS = ["Write a haiku about {} autumn leaves and {} birds.", "Compose a short poem about {} waves and {} ships.",
         "Write a limerick about {} cats and {} hats.", "A poem about {} moons and {} stars, please."]
N = 240
ADMIN = {"LOOP_ADMIN_KEY": "adm1n"}


def twin_dataset() -> RoutingDataset:
    """Math: big right, small wrong; poems: small good, big poor.  Answers carry the judge's verdict."""
    is_math = np.arange(N) % 2 == 0
    prompts = [(MATH if m else POEMS)[i % 4].format(i, i + 3) for i, m in enumerate(is_math)]
    quality = np.where(is_math[:, None], [1.0, 0.0], [0.2, 0.9])
    cost = np.tile([3e-3, 3e-5], (N, 1))
    responses = [[f"answer {i} by {m.name}, score={int(1 + 9 * q)}" for m, q in zip(MODELS, quality[i])]
                 for i in range(N)]
    return RoutingDataset([f"q{i}" for i in range(N)], prompts, ["math" if m else "poem" for m in is_math],
                          ["twin"] * N, MODELS, quality, cost, responses=responses)


def judging(body: dict) -> str:
    """The fake judge rates an answer ``score=N`` with N."""
    score = re.search(r"score=(\d+)", body["messages"][-1]["content"]).group(1)
    return f"Rating: [[{score}]]"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from crossroads.embeddings import make_embedder

    folder = tmp_path_factory.mktemp("loop")
    dataset = twin_dataset()
    embedder = make_embedder("minilm-onnx")
    embeddings = embedder.embed(dataset.prompts)
    is_math = np.array(dataset.categories) == "math"
    wrong = replace(dataset, quality=np.where(is_math[:, None], [0.0, 1.0], [1.0, 0.0]), responses=None)
    bad = make_router("knn", k=10).fit(wrong, embeddings, embedder=embedder.name).save(folder / "bad.npz")
    return {"spec": f"crossroads:{write_jsonl(dataset, folder / 'twin.jsonl')}", "bad": str(bad), "folder": folder}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_loop_turns_a_wrong_router_right(backend, world, tmp_path, capsys, request, monkeypatch):
    monkeypatch.setenv(*next(iter(ADMIN.items())))
    store = (f"sqlite://{tmp_path / 'store.db'}" if backend == "sqlite"
             else fresh_database(request.getfixturevalue("postgres_url")))
    recording = Recording.load([world["spec"]])
    logs, new = tmp_path / "logs.jsonl", tmp_path / "retrained.npz"
    with FakeUpstream(recording=recording).serve() as twin, FakeUpstream(answer=judging).serve() as judge:
        config = recording.serve_config(twin.base_url)
        config.update(routes={"auto": {"router_file": world["bad"], "explore": 0.4, "shadow": {"share": 0.25}}},
                      default_route="auto", store=store, store_prompts=True,
                      security={"admin_key_env": "LOOP_ADMIN_KEY"})
        with ServerProcess(config, tmp_path, env=ADMIN) as server:
            assert main(["replay", "-d", world["spec"], "--url", server.url + "/v1", "--route", "auto",
                         "--requests", str(N), "--concurrency", "4", "--feedback", "none", "--seed", "2"]) == 0
            assert _share_big(server.url, MATH[0].format(5, 8)) < 0.45  # the wrong router sends math to small
            with open_store(store) as opened:
                shadowed = opened.counts()["shadow_outcomes"]
            assert 0.1 * N < shadowed < 0.45 * N  # a quarter of the requests also asked the other model

            # label every stored answer (served and shadow) with the judge
            assert main(["label", "--store", store, "--judge", f"judge-model@{judge.base_url}"]) == 0
            assert main(["logs", "export", "--store", store, "--out", str(logs), "--route", "auto"]) == 0
            logged = load_dataset(f"logs:{logs}")
            assert logged.n_queries == N and logged.logged
            observed = np.isfinite(logged.quality)
            assert observed.sum() == N + shadowed  # every served and every shadow answer carries its label
            assert np.all((logged.propensity > 0) & (logged.propensity <= 1))

            assert main(["train", "-d", f"logs:{logs}", "--router", "knn:k=10", "--out", str(new)]) == 0
            retrained = load_router(new)
            assert retrained.models_ == ["big", "small"]

            assert main(["eval", "--logs", str(logs), "--router-file", str(new), "--replicates", "100",
                         "--out", str(tmp_path / "eval")]) == 0
            estimate = json.loads((tmp_path / "eval" / "candidate.json").read_text())
            assert estimate["candidate"]["quality"]["dr"]["low"] > estimate["logged"]["quality"]["high"]
            # --logs reads the store directly too, to the same figures
            assert main(["eval", "--logs", f"store:{store},route=auto", "--router-file", str(new), "--replicates",
                         "100", "--out", str(tmp_path / "eval-store")]) == 0
            from_store = json.loads((tmp_path / "eval-store" / "candidate.json").read_text())
            assert from_store["candidate"] == estimate["candidate"] and from_store["decisions"] == N
            # the report reads the same estimate from the store itself, judge's labels included
            assert main(["report", "--store", store, "--route", "auto", "--out", str(tmp_path / "report"),
                         "--replicates", "100", "--candidate", f"retrained={new}", "--quality-from", "any"]) == 0
            reported = json.loads((tmp_path / "report" / "report.json").read_text())["candidates"]
            assert reported["decisions"] == N
            retrained_quality = reported["routers"]["retrained"]["candidate"]["quality"]["dr"]
            assert retrained_quality["low"] > reported["routers"]["retrained"]["logged"]["quality"]["high"]

            base = ["promote", "--server", server.url, "--route", "auto", "--logs", str(logs),
                    "--admin-key-env", "LOOP_ADMIN_KEY", "--replicates", "100"]
            capsys.readouterr()
            assert main([*base, "--router-file", world["bad"]]) == 1  # the logging router: not shown better
            assert "not promoted" in capsys.readouterr().out
            assert _share_big(server.url, MATH[0].format(5, 8)) < 0.45
            assert main([*base, "--router-file", str(new)]) == 0
            assert _share_big(server.url, MATH[0].format(5, 8)) > 0.6
            assert _share_big(server.url, POEMS[0].format(5, 8)) < 0.5


def _share_big(url: str, prompt: str, n: int = 30) -> float:
    picks = [httpx.post(url + "/v1/route", json={"model": "auto", "prompt": prompt}, timeout=30).json()["model"]
             for _ in range(n)]
    return picks.count("big") / n
