"""crossroads report: breakdowns, savings and off-policy quality from a store whose truth is known."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from cli_helpers import one_line_error
from logged_traffic import CATEGORIES, MODELS, PRICES, draw, fill
from postgres_server import fresh_database

from crossroads.cli.main import main
from crossroads.evaluate.report import build_report, write_report
from crossroads.evaluate.traffic_estimates import _answer_lengths
from crossroads.store import MIGRATIONS, open_store

N = 1500


@pytest.fixture(scope="module")
def logged():
    return draw(N, seed=3)


@pytest.fixture(scope="module")
def report(logged, tmp_path_factory):
    url = f"sqlite://{tmp_path_factory.mktemp('report') / 'store.db'}"
    with open_store(url) as store:
        fill(store, logged)
        return build_report(store)


def test_savings_against_each_model_cover_the_truth(report, logged):
    truth = logged.cost_usd.sum(axis=0)
    served = logged.served(logged.cost_usd).sum()
    assert report["savings"]["served_usd"] == pytest.approx(served)
    assert report["savings"]["dearest"] == "large"
    for j, model in enumerate(MODELS):
        spend = report["savings"]["models"][model]["spend_usd"]
        assert spend["low"] <= truth[j] <= spend["high"], model
        assert spend["value"] == pytest.approx(truth[j], rel=0.03)
        saving = report["savings"]["models"][model]["savings"]
        assert saving["low"] <= 1 - served / truth[j] <= saving["high"]


def test_quality_of_each_single_model_is_estimated_off_policy(report, logged):
    served = report["quality"]["served"]
    assert served["value"] == pytest.approx(logged.served(logged.quality).mean())
    assert served["n"] == N
    truth = logged.quality.mean(axis=0)
    for j, model in enumerate(MODELS):
        estimates = report["quality"]["single_models"][model]
        for estimator in ("ips", "snips", "dr"):
            assert estimates[estimator]["low"] <= truth[j] <= estimates[estimator]["high"], (model, estimator)
        assert abs(estimates["dr"]["value"] - truth[j]) < 0.05
        # the chosen models' served quality is no estimate of the model's quality: the policy picks favourites
        assert estimates["dr"]["n"] == N


def test_breakdowns_count_every_request(report, logged):
    by_model = {row["name"]: row for row in report["breakdown"]["model"]}
    assert {m: by_model[m]["requests"] for m in MODELS} == dict(zip(MODELS, np.bincount(logged.chosen).tolist()))
    by_category = {row["name"]: row["requests"] for row in report["breakdown"]["category"]}
    assert by_category == {c: int((logged.category == k).sum()) for k, c in enumerate(CATEGORIES)}
    days = report["breakdown"]["day"]
    assert len(days) in (3, 4) and sum(row["requests"] for row in days) == N
    assert sum(sum(models.values()) for models in report["model_by_day"].values()) == N
    latency = 0.1 + 0.01 * (np.arange(N) % 10)
    assert report["totals"]["latency_p95_s"] == pytest.approx(np.percentile(latency, 95))
    assert report["totals"]["spend_usd"] == pytest.approx(report["savings"]["served_usd"])
    assert report["pool"]["large"] == {"price_per_mtok_in": PRICES["large"][0],
                                       "price_per_mtok_out": PRICES["large"][1]}


def test_a_deterministic_route_gets_no_off_policy_figure_and_says_why(tmp_path):
    with open_store(f"sqlite://{tmp_path / 's.db'}") as store:
        fill(store, draw(200, seed=1, explore=0.0))
        report = build_report(store, replicates=20)
    estimate = report["quality"]["single_models"]["large"]["dr"]
    assert estimate["value"] is None and "explore" in estimate["note"]
    assert report["quality"]["served"]["value"] is not None  # what was served is still measured


def test_too_few_labels_give_no_quality_figure(tmp_path):
    with open_store(f"sqlite://{tmp_path / 's.db'}") as store:
        fill(store, draw(300, seed=2), labelled=0.03)
        report = build_report(store, replicates=20)
    served = report["quality"]["served"]
    assert served["value"] is None and "labelled decisions" in served["note"] and served["n"] < 30
    assert report["quality"]["single_models"]["small"]["ips"]["value"] is None
    assert report["savings"]["models"]["small"]["spend_usd"]["value"] is not None  # spend needs no labels


def test_postgresql_streams_the_same_traffic_in_chunks(postgres_url, tmp_path):
    logged = draw(120, seed=5)
    urls = [f"sqlite://{tmp_path / 's.db'}", fresh_database(postgres_url)]
    read = []
    for url in urls:
        with open_store(url) as store:
            fill(store, logged, route="a")
            fill(store, draw(30, seed=6), route="b")
            chunks = list(store.traffic(route="a", chunk_rows=7))
            read.append((chunks, build_report(store, route="a", replicates=20)))
    (sqlite_chunks, sqlite_report), (pg_chunks, pg_report) = read
    assert [len(c) for c in pg_chunks] == [7] * 17 + [1]
    assert [row for c in pg_chunks for row in c] == [row for c in sqlite_chunks for row in c]
    assert pg_report["window"]["decisions"] == 120
    assert json.dumps(pg_report["breakdown"]) == json.dumps(sqlite_report["breakdown"])


def test_window_and_route_select_decisions(tmp_path, logged):
    with open_store(f"sqlite://{tmp_path / 's.db'}") as store:
        fill(store, logged)
        middle = float(np.median(logged.created_s))
        report = build_report(store, since_s=middle, replicates=20)
        assert report["window"]["decisions"] == int((logged.created_s >= middle).sum())
        with pytest.raises(Exception, match="no decision on route 'nope'.*routes: auto"):
            build_report(store, route="nope")


def test_report_files_are_self_contained(report, tmp_path):
    paths = write_report(report, tmp_path / "out")
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=\"?https?:", page)
    assert "Always sending them to large would have cost" in page and "routing saved" in page
    assert json.loads(paths["json"].read_text())["window"]["decisions"] == N
    for name in ("traffic.png", "spend.png", "quality.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"


# -- the command ----------------------------------------------------------------------------
def test_cli_writes_the_report(tmp_path, capsys):
    url = f"sqlite://{tmp_path / 's.db'}"
    with open_store(url) as store:
        fill(store, draw(200, seed=4))
    assert main(["report", "--store", url, "--out", str(tmp_path / "r"), "--replicates", "20"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"200 decisions; spent US\$[\d.]+; saved [\d.]+% \[[\d.]+%, [\d.]+%\] against always large", out)
    assert (tmp_path / "r" / "report.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["--store", "sqlite:///nowhere/s.db"], "no store at /nowhere/s.db"),
    (["--store", "mysql://x"], "unknown store url 'mysql://x'"),
    (["--store", "{db}", "--route", "nope"], "no decision on route 'nope' in the window asked for; its routes: auto"),
    (["--store", "{db}", "--since", "yesterday"], "--since 'yesterday' is not a time"),
    (["--store", "{db}", "--since", "2d", "--until", "3d"], "is not before --until"),
])
def test_cli_errors_are_one_line(args, message, tmp_path, capsys):
    db = tmp_path / "s.db"
    with open_store(f"sqlite://{db}") as store:
        fill(store, draw(40, seed=4))
    argv = ["report", *(a.replace("{db}", str(db)) for a in args), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written half-way


def test_cli_refuses_a_store_of_a_newer_schema(tmp_path, capsys):
    import sqlite3

    db = tmp_path / "s.db"
    with open_store(f"sqlite://{db}"):
        pass
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_s) VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    assert main(["report", "--store", str(db), "--out", str(tmp_path / "r")]) == 2
    assert "newer" in capsys.readouterr().err


def test_bootstrap_weights_are_poisson_one():
    from crossroads.evaluate.traffic_estimates import _POISSON_1, bootstrap

    assert _POISSON_1.mean() == pytest.approx(1.0, abs=1e-3) and _POISSON_1.var() == pytest.approx(1.0, abs=1e-2)
    values = np.random.default_rng(0).normal(size=400)
    point, low, high = bootstrap(lambda w: np.array([w @ values / w.sum()]), 400, replicates=400)
    standard_error = values.std() / np.sqrt(400)
    assert high[0] - low[0] == pytest.approx(2 * 1.96 * standard_error, rel=0.2)
    assert point[0] == pytest.approx(values.mean())


def test_a_store_of_the_first_schema_is_brought_up_and_reported(tmp_path, monkeypatch):
    from crossroads.store import records

    url = f"sqlite://{tmp_path / 'old.db'}"
    with monkeypatch.context() as patch:
        patch.setattr(records, "MIGRATIONS", MIGRATIONS[:1])
        with open_store(url) as old:
            old._db.execute(  # a decision as version 1 wrote it: no category
                "INSERT INTO decisions (decision_id, route, model, candidates, probability, created_s) "
                "VALUES ('d0', 'auto', 'small', '[\"small\"]', 1.0, 1780000000.0)")
            assert old.schema_version == 1
    with open_store(url) as store:
        assert store.schema_version == len(MIGRATIONS)
        store.record_pool(PRICES)
        report = build_report(store, replicates=20)
    assert report["window"]["decisions"] == 1
    assert report["breakdown"]["category"][0]["name"] == "(none)"
    assert report["breakdown"]["model"][0]["errors"] == 0  # decided but never called (/v1/route): not an error


def test_a_category_a_model_never_answered_borrows_the_others_length_scaled_to_its_verbosity():
    # model 0 answers categories 0 (100 tokens) and 1 (300); model 1 writes twice as much, seen in category 0 only
    model = np.array([0] * 200 + [0] * 200 + [1] * 200)
    category = np.array([0] * 200 + [1] * 200 + [0] * 200)
    tokens = np.array([100.0] * 200 + [300.0] * 200 + [200.0] * 200)
    lengths = _answer_lengths(model, category, tokens, np.ones(len(model)), n_models=2, n_categories=2)
    assert lengths[0, 0] == pytest.approx(100, rel=0.05) and lengths[0, 1] == pytest.approx(300, rel=0.05)
    assert lengths[1, 0] == pytest.approx(200, rel=0.05)
    assert lengths[1, 1] == pytest.approx(600, rel=0.1)  # not model 1's mean over what it answered (200)


# -- candidate routers in the report ------------------------------------------------------------
@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """A store whose 600 decisions were stored with their prompts, and router files: `best` knows which model is
    best in each category, `small` always prefers the small model."""
    from logged_traffic import QUALITY, prompts

    from crossroads.data.dataset import ModelInfo, RoutingDataset
    from crossroads.embeddings import make_embedder
    from crossroads.routers import make_router

    folder = tmp_path_factory.mktemp("candidates")
    logged = draw(600, seed=7)
    url = f"sqlite://{folder / 'store.db'}"
    with open_store(url) as store:
        fill(store, logged, with_prompts=True)
    teaching = draw(200, seed=8)
    texts = prompts(teaching)
    embedder = make_embedder("minilm-onnx")
    embeddings = embedder.embed(texts)
    models = [ModelInfo(m, *PRICES[m]) for m in MODELS]

    def router(quality: np.ndarray, name: str) -> str:
        data = RoutingDataset([f"t{i}" for i in range(200)], texts, [CATEGORIES[c] for c in teaching.category],
                              ["teach"] * 200, models, quality, np.zeros_like(quality))
        return str(make_router("knn", k=10).fit(data, embeddings, embedder=embedder.name).save(folder / name))

    best = QUALITY.argmax(axis=1)
    return {"url": url, "logged": logged, "best": router(QUALITY[teaching.category], "best.npz"),
            "small": router(np.tile([1.0, 0.0, 0.0], (200, 1)), "small.npz"),
            "truth": {"best": logged.quality[np.arange(600), best[logged.category]].mean(),
                      "small": logged.quality[:, 0].mean()}}


def test_the_report_estimates_candidate_routers_on_the_logged_traffic(candidates, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", "--store", candidates["url"], "--out", str(out), "--replicates", "100",
                 "--candidate", candidates["best"], "--candidate", f"cheap={candidates['small']}"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    section = report["candidates"]
    assert section["decisions"] == 600 and section["without_prompt"] == 0 and section["note"] is None
    assert list(section["routers"]) == ["best", "cheap"]
    logged = candidates["logged"]
    served = logged.served(logged.quality).mean()
    for name, truth in (("best", candidates["truth"]["best"]), ("cheap", candidates["truth"]["small"])):
        entry = section["routers"][name]
        assert entry["logged"]["quality"]["value"] == pytest.approx(served)
        for estimator in ("ips", "snips", "dr"):
            estimate = entry["candidate"]["quality"][estimator]
            assert estimate["low"] <= truth <= estimate["high"], (name, estimator, estimate, truth)
    best, cheap = section["routers"]["best"], section["routers"]["cheap"]
    assert best["chosen"]["small"] == 0 and cheap["chosen"] == {"small": 600, "medium": 0, "large": 0}
    assert best["candidate"]["quality"]["dr"]["low"] > best["logged"]["quality"]["high"]  # better than the policy
    assert cheap["candidate"]["quality"]["dr"]["high"] < cheap["logged"]["quality"]["low"]  # worse than the policy
    assert re.search(r"candidate best: reward [\d.]+ \[[\d.]+, [\d.]+\] against [\d.]+ \[[\d.]+, [\d.]+\] logged; "
                     r"quality [\d.]+ \[", printed)
    page = (out / "report.html").read_text()
    assert "Candidate routers (off-policy)" in page and "<td>cheap</td>" in page
    assert "on the 600 answered decisions stored with their prompt" in page


def test_candidates_on_a_store_without_prompts_get_a_note_instead_of_figures(candidates, tmp_path, capsys):
    url = f"sqlite://{tmp_path / 's.db'}"
    with open_store(url) as store:
        fill(store, draw(100, seed=4))
    assert main(["report", "--store", url, "--out", str(tmp_path / "r"), "--replicates", "20",
                 "--candidate", candidates["best"]]) == 0
    assert "no candidate estimate: none of the 100 decisions has its prompt stored" in capsys.readouterr().out
    section = json.loads((tmp_path / "r" / "report.json").read_text())["candidates"]
    assert section["routers"] == {} and "store_prompts: true" in section["note"]
    assert "No estimate: none of the 100 decisions" in (tmp_path / "r" / "report.html").read_text()


def test_candidates_labelled_only_by_another_source_have_no_quality_figure(candidates, tmp_path):
    assert main(["report", "--store", candidates["url"], "--out", str(tmp_path / "r"), "--replicates", "20",
                 "--candidate", candidates["best"], "--quality-from", "judge:nobody"]) == 0
    entry = json.loads((tmp_path / "r" / "report.json").read_text())["candidates"]["routers"]["best"]
    quality = entry["candidate"]["quality"]["dr"]
    assert quality["value"] is None and "labelled" in quality["note"]
    assert entry["candidate"]["cost_usd"]["dr"]["value"] is not None  # cost needs no label


@pytest.mark.parametrize("candidate, message", [
    ("{missing}", "nope.npz: no such router file"),
    ("a={best}", "the name 'a' is given twice"),
    ("=x.npz", "give FILE.npz or NAME=FILE.npz"),
])
def test_bad_candidates_are_one_line_errors_and_nothing_is_written(candidate, message, candidates, tmp_path,
                                                                    capsys):
    names = {"missing": str(tmp_path / "nope.npz"), "best": candidates["best"]}
    extra = ["--candidate", f"a={candidates['small']}"] if "twice" in message else []
    argv = ["report", "--store", candidates["url"], "--out", str(tmp_path / "r"), *extra,
            "--candidate", candidate.format(**names)]
    assert main(argv) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "r").exists()
