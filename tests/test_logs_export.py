"""crossroads logs export and the logs: / store: dataset formats, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from cli_helpers import one_line_error
from postgres_server import fresh_database

from crossroads.cli.main import main
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.importers import load_dataset as load_file
from crossroads.data.jsonl import read_jsonl, write_jsonl
from crossroads.errors import CrossroadsError, DataFormatError
from crossroads.store import MIGRATIONS, open_store
from crossroads.store.export import load_dataset, read_logs

PRICES = {"small": (0.1, 0.2), "large": (5.0, 15.0)}  # "mid" answers but the pool table has no price for it
MODELS = ["large", "mid", "small"]  # every model chosen, answered or shadowed, in name order


def decide(store, decision_id: str, model: str, created_s: float, prompt: str | None, route: str = "default",
           probability: float | None = 0.5, category: str | None = None) -> None:
    store.record_decision(decision_id, route=route, model=model, learner_key=None, candidates=MODELS,
                          probability=probability, scores=None, context=None, created_s=created_s, prompt=prompt,
                          category=category)


def answer(store, decision_id: str, model: str, cost_usd: float, latency_s: float, status: str = "ok",
           response: str | None = None, fallbacks: int = 0) -> None:
    store.record_outcome(decision_id, model=model, status=status, cost_usd=cost_usd, latency_s=latency_s,
                         ttft_s=None, tokens_in=10, tokens_out=20, fallbacks=fallbacks, response=response)


def shadow(store, decision_id: str, model: str, cost_usd: float, latency_s: float, status: str = "ok",
           response: str | None = None) -> None:
    store.record_shadow_outcome(decision_id, model=model, status=status, cost_usd=cost_usd, latency_s=latency_s,
                                tokens_in=10, tokens_out=20, response=response)


def label(store, decision_id: str, quality: float | None, source: str = "user", model: str | None = None,
          reward: float | None = None) -> None:
    store.add_feedback(decision_id, reward=reward, quality=quality, payload=None, created_s=5000.0, source=source,
                       model=model)


def fill(store) -> None:
    """Six decisions: labelled by users and judges, a fallback, shadows, a failure, one never answered, one
    without its prompt."""
    store.record_pool(PRICES)
    decide(store, "d1", "small", 1000.0, "What is 2+2?", probability=0.8, category="math")
    answer(store, "d1", "small", 0.001, 0.5, response="4")
    shadow(store, "d1", "large", 0.02, 2.0, response="Four.")
    label(store, "d1", 0.9)  # users' first label on the served answer: it wins under any and user
    label(store, "d1", 0.1)
    label(store, "d1", 0.5, source="judge:x")
    label(store, "d1", 0.7, source="judge:x", model="large")  # the shadow answer's label
    decide(store, "d2", "large", 1001.0, "Write a haiku", probability=None)
    answer(store, "d2", "mid", 0.005, 1.25, fallbacks=1)  # large failed, mid answered
    label(store, "d2", None, reward=1.0)  # a reward without a quality labels nothing
    label(store, "d2", 0.4, source="judge:x")
    label(store, "d2", 0.6, source="judge:y")
    decide(store, "d3", "small", 1002.0, "Failing prompt")
    answer(store, "d3", "large", None, 3.0, status="failed", fallbacks=2)
    shadow(store, "d3", "mid", 0.003, 1.0)  # its decision failed: not exported
    decide(store, "d4", "small", 1003.0, None)  # served without store_prompts
    answer(store, "d4", "small", 0.001, 0.4)
    decide(store, "d5", "large", 1004.0, "Translate this", route="other", probability=1.0, category="lang")
    answer(store, "d5", "large", 0.03, 2.5, response="Traduire")
    shadow(store, "d5", "small", None, 0.1, status="error")  # a failed shadow call is no outcome
    shadow(store, "d5", "mid", 0.004, 0.75)
    label(store, "d5", None, reward=0.0)
    decide(store, "d6", "small", 1005.0, "Never answered")  # no outcome at all


#: (query, model) -> (cost_usd, latency_s, response) of every exported answer, and each one's label by source.
ANSWERS = {("d1", "small"): (0.001, 0.5, "4"), ("d1", "large"): (0.02, 2.0, "Four."),
           ("d2", "mid"): (0.005, 1.25, None), ("d5", "large"): (0.03, 2.5, "Traduire"),
           ("d5", "mid"): (0.004, 0.75, None)}
LABELS = {"any": {("d1", "small"): 0.9, ("d1", "large"): 0.7, ("d2", "mid"): 0.4},
          "user": {("d1", "small"): 0.9},
          "judge:x": {("d1", "small"): 0.5, ("d1", "large"): 0.7, ("d2", "mid"): 0.4},
          "judge:y": {("d2", "mid"): 0.6}}
QUERIES = {"d1": ("What is 2+2?", "math", "logs/default", "small", 0.8),
           "d2": ("Write a haiku", "", "logs/default", "large", math.nan),
           "d5": ("Translate this", "lang", "logs/other", "large", 1.0)}


def assert_logged(dataset: RoutingDataset, queries: list[str], quality_from: str = "any",
                  models: list[str] = MODELS) -> None:
    """Every field and cell of ``dataset`` is what :func:`fill` stored for ``queries`` (answered by ``models``)."""
    assert dataset.logged
    assert dataset.query_ids == queries
    assert dataset.model_names == models
    assert dataset.models == [ModelInfo(name, *PRICES.get(name, (None, None))) for name in models]
    assert dataset.cost_estimated == [False] * len(models)
    assert dataset.prompts == [QUERIES[q][0] for q in queries]
    assert dataset.categories == [QUERIES[q][1] for q in queries]
    assert dataset.sources == [QUERIES[q][2] for q in queries]
    assert [dataset.model_names[j] for j in dataset.served] == [QUERIES[q][3] for q in queries]
    np.testing.assert_array_equal(dataset.propensity, [QUERIES[q][4] for q in queries])
    for i, query in enumerate(queries):
        for j, model in enumerate(models):
            cost, latency, response = ANSWERS.get((query, model), (math.nan, math.nan, None))
            quality = LABELS[quality_from].get((query, model), math.nan)
            got = (dataset.quality[i, j], dataset.cost_usd[i, j], dataset.latency_s[i, j])
            np.testing.assert_array_equal(got, (quality, cost, latency), err_msg=f"{query} {model}")
            assert dataset.responses[i][j] == response, (query, model)


# -- export, and reading it back -----------------------------------------------------------------
def test_export_reads_back_every_cell_from_the_file_and_from_the_store(store_url, tmp_path, capsys):
    with open_store(store_url) as store:
        fill(store)
    out = tmp_path / "logs" / "traffic.jsonl"
    assert main(["logs", "export", "--store", store_url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 queries (2 with quality), 2 shadow outcomes (1 with quality), 3 models" in printed
    assert "skipped 1 decisions without a prompt and 2 failed" in printed
    header = json.loads(out.read_text().splitlines()[0])
    assert header["optional_fields"] == ["latency_s", "response", "logged"] and header["n_queries"] == 3
    assert json.loads(out.read_text().splitlines()[2])["logged"] == {"model": "large", "propensity": None}
    assert [p.name for p in out.parent.iterdir()] == ["traffic.jsonl"]  # no temporary file left behind
    assert_logged(load_file(f"logs:{out}"), ["d1", "d2", "d5"])
    assert_logged(load_file(f"crossroads:{out}"), ["d1", "d2", "d5"])
    assert_logged(load_dataset(f"store:{store_url}"), ["d1", "d2", "d5"])


@pytest.mark.parametrize("quality_from", ["user", "judge:x", "judge:y"])
def test_quality_from_picks_the_labels_of_one_source(store_url, quality_from, tmp_path):
    with open_store(store_url) as store:
        fill(store)
    out = tmp_path / "traffic.jsonl"
    assert main(["logs", "export", "--store", store_url, "--out", str(out), "--quality-from", quality_from]) == 0
    assert_logged(load_file(f"logs:{out}"), ["d1", "d2", "d5"], quality_from)
    assert_logged(load_dataset(f"store:{store_url},quality_from={quality_from}"), ["d1", "d2", "d5"], quality_from)


def test_route_and_time_window_filter_the_decisions(tmp_path):
    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        fill(store)
        assert_logged(read_logs(store, route="other").dataset, ["d5"], models=["large", "mid"])
        window = read_logs(store, since_s=1001.0, until_s=1004.0)  # d2, d3 (failed), d4 (no prompt)
        assert (window.decisions, window.failed, window.without_prompt) == (3, 1, 1)
        assert window.dataset.query_ids == ["d2"] and window.dataset.model_names == ["large", "mid"]
    out = tmp_path / "other.jsonl"
    assert main(["logs", "export", "--store", url, "--out", str(out), "--route", "other",
                 "--since", "1970-01-01T00:16:44", "--until", "1970-01-01T00:16:45"]) == 0
    assert load_file(f"logs:{out}").query_ids == ["d5"]
    relative = load_dataset(f"store:{url},route=default,since_s=1000.5")
    assert relative.query_ids == ["d2"]


def test_a_teams_export_holds_its_own_traffic_only(tmp_path, capsys):
    from crossroads.store.keys import store_keys

    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        fill(store)  # decisions of no team
        for team in ("search", "support"):
            store_keys(store).create_team(team)
        for n, team in enumerate(["search", "support", "search"]):
            store.record_decision(f"t{n}", route="default", model="small", learner_key=None, candidates=MODELS,
                                  probability=0.5, scores=None, context=None, created_s=2000.0 + n,
                                  prompt=f"question {n}", key_id=f"key-{team}", team=team)
            answer(store, f"t{n}", "small", 0.001, 0.5, response="answer")
        assert read_logs(store, team="search").dataset.query_ids == ["t0", "t2"]
        assert "t1" in read_logs(store).dataset.query_ids  # no team: everyone's
        with pytest.raises(CrossroadsError, match="unknown team 'ops': the store has teams 'search', 'support'"):
            read_logs(store, team="ops")
    out = tmp_path / "support.jsonl"
    assert main(["logs", "export", "--store", url, "--out", str(out), "--team", "support"]) == 0
    assert load_file(f"logs:{out}").query_ids == ["t1"]
    assert load_dataset(f"store:{url},team=search").query_ids == ["t0", "t2"]
    capsys.readouterr()
    assert main(["logs", "export", "--store", url, "--out", str(tmp_path / "x.jsonl"), "--team", "ops"]) == 2
    assert "unknown team 'ops'" in one_line_error(capsys) and not (tmp_path / "x.jsonl").exists()


def test_spec_takes_every_form_of_store_url(tmp_path, monkeypatch):
    """``store:`` is followed by a URL with its own colons and slashes, then options."""
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite://crossroads.db") as store:
        fill(store)
    for spec in (f"store:sqlite://{tmp_path}/crossroads.db", "store:crossroads.db", "store:./crossroads.db",
                 "store:sqlite://crossroads.db,route=default", "store:url=crossroads.db,quality_from=any"):
        assert load_dataset(spec).query_ids[:2] == ["d1", "d2"], spec


def test_store_spec_with_options_on_postgresql(postgres_url):
    url = fresh_database(postgres_url)
    with open_store(url) as store:
        fill(store)
    assert url.startswith("postgresql://postgres@127.0.0.1:")
    assert_logged(load_dataset(f"store:{url},route=other,quality_from=user"), ["d5"], "user", ["large", "mid"])


# -- the logged fields of the JSONL format ----------------------------------------------------------
def logged_dataset(served, propensity) -> RoutingDataset:
    return RoutingDataset(query_ids=["a", "b"], prompts=["x", "y"], categories=["", "c"], sources=["s", "s"],
                          models=[ModelInfo("m0", 1.0, 2.0), ModelInfo("m1")],
                          quality=[[1.0, np.nan], [np.nan, 0.25]], cost_usd=[[0.5, np.nan], [np.nan, 0.125]],
                          served=served, propensity=propensity)


def test_logged_fields_round_trip_and_plain_datasets_stay_plain(tmp_path):
    dataset = logged_dataset([1, -1], [0.375, np.nan])
    back = read_jsonl(write_jsonl(dataset, tmp_path / "logged.jsonl"))
    np.testing.assert_array_equal(back.served, [1, -1])
    np.testing.assert_array_equal(back.propensity, [0.375, np.nan])
    np.testing.assert_array_equal(back.quality, dataset.quality)
    plain = read_jsonl(write_jsonl(logged_dataset(None, None), tmp_path / "plain.jsonl"))
    assert not plain.logged and "logged" not in (tmp_path / "plain.jsonl").read_text()
    with pytest.raises(DataFormatError, match="not a log export: write one with crossroads logs export"):
        load_file(f"logs:{tmp_path / 'plain.jsonl'}")


@pytest.mark.parametrize("logged, expected", [
    ({"model": "m9", "propensity": 0.5}, "logged model among the header's models (m0, m1), found 'm9'"),
    ({"model": "m0", "propensity": 0}, "logged propensity as a probability in (0, 1] or null, found 0"),
    ({"model": "m0", "propensity": 1.5}, "logged propensity as a probability in (0, 1] or null, found 1.5"),
    ({"model": "m0", "propensity": "high"}, "logged propensity as a probability in (0, 1] or null, found 'high'"),
    ("m0", "'logged' as an object"),
])
def test_a_bad_logged_field_names_its_row(tmp_path, logged, expected):
    path = write_jsonl(logged_dataset([0, 1], [0.5, 0.5]), tmp_path / "logged.jsonl")
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row["logged"] = logged
    lines[2] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as error:
        read_jsonl(path)
    assert f"{path}, row 3: expected " in str(error.value) and expected in str(error.value)


# -- bad input --------------------------------------------------------------------------------------
def test_decisions_without_prompts_cannot_be_exported(tmp_path, capsys):
    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        decide(store, "d1", "small", 1000.0, None)
        answer(store, "d1", "small", 0.001, 0.5)
    out = tmp_path / "logs.jsonl"
    assert main(["logs", "export", "--store", url, "--out", str(out)]) == 2
    assert "none of the 1 decisions has its prompt stored" in one_line_error(capsys)
    assert not out.exists()
    with pytest.raises(CrossroadsError, match="set `store_prompts: true`"):
        load_dataset(f"store:{url}")


def test_bad_stores_and_routes_fail_in_one_line_and_write_nothing(tmp_path, capsys):
    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        fill(store)
    out = tmp_path / "logs.jsonl"

    def fails(*extra: str) -> str:
        assert main(["logs", "export", "--out", str(out), *extra]) == 2
        assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("store.db")] == []  # nothing written
        return one_line_error(capsys)

    assert "unknown store url 'mysql://db/x'; use 'sqlite:///absolute/path.db'" in fails("--store", "mysql://db/x")
    assert f"no store at {tmp_path / 'missing.db'}" in fails("--store", str(tmp_path / "missing.db"))
    assert "unknown route 'nope': the store has decisions of 'default', 'other'" in fails(
        "--store", url, "--route", "nope")
    assert "--since 2026-01-02 is not before --until 2026-01-01" in fails(
        "--store", url, "--since", "2026-01-02", "--until", "2026-01-01")
    assert "the store holds no decisions (since 4000000000.0): nothing to export" in fails(
        "--store", url, "--since", "2096-10-02T07:06:40")
    with closing(sqlite3.connect(tmp_path / "store.db")) as conn, conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_s) VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    assert "created by a newer crossroads; upgrade crossroads" in fails("--store", url)
    out.write_text("an earlier export\n")  # a failed export leaves an existing file as it was
    assert main(["logs", "export", "--out", str(out), "--store", url]) == 2
    assert out.read_text() == "an earlier export\n"


def test_the_data_layer_points_a_store_spec_to_its_reader(tmp_path):
    with pytest.raises(CrossroadsError, match="is a store, which crossroads.data cannot read"):
        load_file(f"store:sqlite://{tmp_path / 'x.db'}")
    with pytest.raises(CrossroadsError, match="names no store: write store:URL"):
        load_dataset("store:route=default")


def test_train_loads_a_log_export(tmp_path, capsys):
    """``crossroads train --dataset logs:FILE`` reads the export and fits on it."""
    url = f"sqlite://{tmp_path / 'store.db'}"
    with open_store(url) as store:
        fill(store)
    out = tmp_path / "logs.jsonl"
    assert main(["logs", "export", "--store", url, "--out", str(out)]) == 0
    router = tmp_path / "knn.npz"
    code = main(["train", "--dataset", f"logs:{out}", "--router", "knn:k=2", "--out", str(router)])
    err = capsys.readouterr().err
    assert "not a log export" not in err and "Traceback" not in err
    assert code == 0, err
    assert router.is_file()
