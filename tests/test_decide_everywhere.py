"""One decision everywhere: `crossroads route`, the Python client and the server pick the same model.

The same router file, pool (names, prices, tiers), objective and rule go to the three
front doors; for every prompt the chosen model must be identical.  The prompts and
objectives are chosen so that both models get chosen somewhere, so agreement is not
the trivial agreement of always picking one model.
"""

from __future__ import annotations

import json

import httpx
import pytest
from serve_helpers import ServerThread
from topics import topics_dataset

import crossroads
from crossroads.cli.main import main
from crossroads.data.dataset import ModelInfo
from crossroads.embeddings import make_embedder
from crossroads.routers import make_router
from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

PROMPTS = ["What is 12 times 12?", "Write a short poem about snow.", "Solve 3x + 5 = 20 for x.",
           "Compose a haiku about the autumn moon.", "How many primes are there below 30?",
           "Describe the smell of rain in two lines of verse."]
#: (objective, rule); None leaves the rule to its default for a route with an objective (reward).
DECISIONS = [("quality=1", None), ("quality=1,cost=0.3", None), ("quality=1,cost=5", None),
             ("quality=1", "within:tolerance=0.3"), ("quality=1", "utility:willingness_to_pay=40")]


@pytest.fixture(scope="module")
def knn_file(tmp_path_factory):
    """A knn router on real embeddings: `big` answers math well, `small` answers poems well."""
    dataset = topics_dataset([ModelInfo("big", 10, 30), ModelInfo("small", 0.1, 0.3)])
    embedder = make_embedder("minilm-onnx", cache=False)
    router = make_router("knn", k=3).fit(dataset, embedder.embed(dataset.prompts), embedder=embedder.name)
    return str(router.save(tmp_path_factory.mktemp("routers") / "knn.npz"))


def pool_and_models(router_file: str):
    """The pool as `crossroads route --pool` writes it, and the same models in a server config."""
    if router_file == "default":  # catalogue models at their catalogue prices
        priced = [("gpt-4o", 2.5, 10.0, None), ("gpt-4o-mini", 0.15, 0.6, None)]
    else:
        priced = [("big", 10.0, 30.0, "frontier"), ("small", 0.1, 0.3, "small")]
    pool = ";".join(f"{name}:price={p_in}/{p_out}" + (f",tier={tier}" if tier else "") for name, p_in, p_out, tier in priced)
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo", "price_per_mtok_in": p_in,
               "price_per_mtok_out": p_out, **({"tier": tier} if tier else {})} for name, p_in, p_out, tier in priced]
    return pool, models


def via_cli(capsys, prompt: str, router_file: str, pool: str, objective: str, rule: str | None) -> str:
    argv = ["route", prompt, "--router-file", router_file, "--pool", pool, "--objective", objective, "--json"]
    assert main(argv + (["--rule", rule] if rule else [])) == 0
    return json.loads(capsys.readouterr().out)["model"]


@pytest.mark.parametrize("router_file", ["knn", "default"])
def test_cli_client_and_server_choose_the_same_model(router_file, knn_file, tmp_path, capsys):
    path = knn_file if router_file == "knn" else "default"
    pool, models = pool_and_models(path)
    routes = {f"r{i}": {"router_file": path, "objective": objective, **({"rule": rule} if rule else {})}
              for i, (objective, rule) in enumerate(DECISIONS)}
    config = {"models": models, "routes": routes, "store": f"sqlite:///{tmp_path}/store.db"}
    chosen = {"cli": [], "client": [], "server": []}
    with ServerThread(Gateway(parse_config({**config, "store": f"sqlite:///{tmp_path}/server.db"}),
                              http_client=FakeUpstream().async_client())) as server, \
            crossroads.Client(config, http_client=FakeUpstream().async_client()) as client:
        for i, (objective, rule) in enumerate(DECISIONS):
            for prompt in PROMPTS:
                chosen["cli"].append(via_cli(capsys, prompt, path, pool, objective, rule))
                chosen["client"].append(client.route(prompt, model=f"r{i}")["model"])
                answer = httpx.post(server.url + "/v1/route", json={"model": f"r{i}", "prompt": prompt}, timeout=30)
                chosen["server"].append(answer.json()["model"])
    assert chosen["cli"] == chosen["client"] == chosen["server"]
    assert len(set(chosen["cli"])) == 2  # both models are chosen somewhere: the agreement is not trivial
