"""``crossroads label``: stored answers judged by an LLM behind a real socket, verdicts stored as feedback."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from contextlib import closing

import pytest
from cli_helpers import one_line_error
from postgres_server import fresh_database

from crossroads.cli.main import main
from crossroads.evaluate.labelling import judge_grader, label
from crossroads.grading.judge import LLMJudge
from crossroads.store import open_store
from crossroads.store.records import TRAFFIC_COLUMNS
from crossroads.upstream.fake import FakeUpstream
from crossroads.upstream.servers import free_port

JUDGE = "judge-model"
#: What the fake judge reads in an answer: ``score=N`` makes it rate N, ``mumble`` makes it give no rating.
_ANSWER = re.compile(r"\[Assistant's answer\]\n(.*)", re.DOTALL)


def judging(body: dict) -> str:
    """The fake judge: rates an answer ``score=N`` with N, in MT-Bench's format; no rating for the rest."""
    answer = _ANSWER.search(body["messages"][-1]["content"]).group(1)
    score = re.search(r"score=(\d+)", answer)
    return f"A fine answer. Rating: [[{score.group(1)}]]" if score else "Hmm, hard to say, the answer rambles."


@pytest.fixture
def judge():
    with FakeUpstream(answer=judging).serve() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite://{tmp_path / 'store.db'}"


def fill(url: str, answers: dict | None = None) -> None:
    """Decisions as a server with shadow traffic stores them; ``answers`` overrides the served answers' texts.

    d1 (small served, large and mid shadowed; mid failed), d2 (large served), d3 stored without its
    prompt, d4 served with an error (no text), d5 on route ``other``.
    """
    answers = {"d1": "4, score=7", "d2": "It is four. score=4", "d5": "no idea score=1"} | (answers or {})
    with open_store(url) as store:
        for i, (decision_id, route, model, prompt) in enumerate([
                ("d1", "auto", "small", "What is 2+2?"), ("d2", "auto", "large", "And 3+1?"),
                ("d3", "auto", "small", None), ("d4", "auto", "small", "Capital of France?"),
                ("d5", "other", "small", "Why is the sky blue?")]):
            store.record_decision(decision_id, route=route, model=model, learner_key=route,
                                  candidates=["small", "large", "mid"], probability=0.5, scores=None, context=None,
                                  created_s=1000.0 + i, prompt=prompt)
            failed = decision_id == "d4"
            store.record_outcome(decision_id, model=model, status="error" if failed else "ok", cost_usd=0.001,
                                 latency_s=0.5, ttft_s=0.1, tokens_in=10, tokens_out=5, fallbacks=0,
                                 error="small: 500" if failed else None,
                                 response=None if failed or prompt is None else answers[decision_id])
        store.record_shadow_outcome("d1", model="large", status="ok", cost_usd=0.01, latency_s=1.0, tokens_in=10,
                                    tokens_out=5, response="Four. score=10")
        store.record_shadow_outcome("d1", model="mid", status="error", cost_usd=None, latency_s=1.0, tokens_in=None,
                                    tokens_out=None, error="mid: 503")


def feedback(url: str) -> list[tuple]:
    """(decision_id, model, source, quality, payload) of every feedback row, in a stable order."""
    sql = "SELECT decision_id, model, source, quality, payload FROM feedback ORDER BY decision_id, COALESCE(model, '')"
    if url.startswith("sqlite://"):
        with closing(sqlite3.connect(url[len("sqlite://"):])) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(sql).fetchall()
    return [(d, m, s, q, json.loads(p) if p else None) for d, m, s, q, p in rows]


def run(*argv: str) -> int:
    return main(["label", *argv])


# -- labelling --------------------------------------------------------------------------------
def test_judge_labels_served_and_shadow_answers_once(store_url, judge, capsys):
    fill(store_url)
    assert run("--store", store_url, "--judge", f"{JUDGE}@{judge.base_url}", "-c", "3") == 0
    out = capsys.readouterr().out
    source = f"judge:{JUDGE}"
    assert feedback(store_url) == [
        ("d1", None, source, pytest.approx(6 / 9), {"rating": 7.0}),
        ("d1", "large", source, pytest.approx(1.0), {"rating": 10.0}),
        ("d2", None, source, pytest.approx(3 / 9), {"rating": 4.0}),
        ("d5", None, source, pytest.approx(0.0), {"rating": 1.0}),
    ]
    assert f"labelled 4 answers as {source} (mean rating 5.50/10" in out
    assert "1 of 5 decisions have no stored prompt: start serve with store_prompts: true" in out
    assert "2 answers stored without text" in out  # d4's failed call and mid's failed shadow call
    chats = [r["body"] for r in judge.requests if r["path"].endswith("/chat/completions")]
    assert len(chats) == 4 and {body["model"] for body in chats} == {JUDGE}
    assert all(body["temperature"] == 0.0 for body in chats)
    assert any("[Question]\nWhat is 2+2?" in body["messages"][-1]["content"] for body in chats)
    with open_store(store_url) as store:  # users' verdicts stay apart: the report's quality column sees none
        quality = TRAFFIC_COLUMNS.index("quality")
        assert [row[quality] for chunk in store.traffic() for row in chunk] == [None] * 5

    assert run("--store", store_url, "--judge", f"{JUDGE}@{judge.base_url}") == 0  # a rerun resumes: nothing left
    assert "labelled 0 answers" in capsys.readouterr().out
    assert len(feedback(store_url)) == 4
    assert len(judge.requests) == 4


def test_work_pages_in_order_and_drops_what_is_labelled(store_url):
    fill(store_url)
    with open_store(store_url) as store:
        pages = list(store.labelling_work("judge:x", chunk_rows=2))
        assert [len(page) for page in pages] == [2, 2]
        assert [(d, m) for page in pages for d, m, _, _ in page] == [("d1", None), ("d1", "large"), ("d2", None),
                                                                    ("d5", None)]
        assert pages[0][1][2:] == ("What is 2+2?", "Four. score=10")
        store.add_feedback("d1", reward=None, quality=1.0, payload=None, created_s=0.0, source="judge:x",
                           model="large")
        store.add_feedback("d2", reward=None, quality=1.0, payload=None, created_s=0.0)  # a user's: not the judge's
        left = [(d, m) for page in store.labelling_work("judge:x", route="auto") for d, m, _, _ in page]
        assert left == [("d1", None), ("d2", None)]
        assert store.labelling_counts("judge:x") == {"decisions": 5, "no_prompt": 1, "no_text": 2, "answers": 4,
                                                     "labelled": 1}


def test_two_labellers_at_once_store_each_verdict_once(judge, postgres_url):
    url = fresh_database(postgres_url)
    fill(url)
    results = []

    def labeller():
        with open_store(url) as store:
            grader = judge_grader(LLMJudge(judge.base_url, JUDGE, api_key_env=None))
            results.append(label(store, grader, source=f"judge:{JUDGE}", concurrency=2))

    threads = [threading.Thread(target=labeller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2
    rows = feedback(url)
    assert len(rows) == 4 and len({(d, m) for d, m, *_ in rows}) == 4
    assert sum(r.labelled for r in results) == 4


def test_sample_draws_a_seeded_subset_then_a_rerun_labels_the_rest(tmp_path, judge, capsys):
    picked = []
    for name in ("a", "b"):
        url = f"sqlite://{tmp_path / name}.db"
        fill(url)
        assert run("--store", url, "--judge", f"{JUDGE}@{judge.base_url}", "--sample", "2", "--seed", "3") == 0
        assert "labelled 2 answers" in capsys.readouterr().out
        picked.append([(d, m) for d, m, *_ in feedback(url)])
    assert picked[0] == picked[1] and len(picked[0]) == 2  # the same seed draws the same answers
    assert run("--store", url, "--judge", f"{JUDGE}@{judge.base_url}", "--sample", "10") == 0
    out = capsys.readouterr().out
    assert "labelled 2 answers" in out and "2 labelled before, skipped" in out
    assert len({(d, m) for d, m, *_ in feedback(url)}) == 4
    seeds = set()
    for seed in range(8):  # the seed matters: over 8 seeds, more than one pair is drawn
        url = f"sqlite://{tmp_path / f'seed{seed}'}.db"
        fill(url)
        assert run("--store", url, "--judge", f"{JUDGE}@{judge.base_url}", "--sample", "2", "--seed", str(seed)) == 0
        seeds.add(tuple((d, m) for d, m, *_ in feedback(url)))
    assert len(seeds) > 1


def test_route_restricts_the_work_and_an_unknown_route_is_refused(sqlite_url, judge, capsys):
    fill(sqlite_url)
    assert run("--store", sqlite_url, "--judge", f"{JUDGE}@{judge.base_url}", "--route", "other") == 0
    assert [(d, m) for d, m, *_ in feedback(sqlite_url)] == [("d5", None)]
    capsys.readouterr()
    assert run("--store", sqlite_url, "--judge", f"{JUDGE}@{judge.base_url}", "--route", "nope") == 2
    assert one_line_error(capsys) == ("crossroads: error: unknown route 'nope': the store's routes are auto, other")


# -- judges that fail -----------------------------------------------------------------------------
def test_an_answer_without_a_rating_is_reported_not_stored(sqlite_url, judge, capsys):
    fill(sqlite_url, {"d2": "I mumble"})
    assert run("--store", sqlite_url, "--judge", f"{JUDGE}@{judge.base_url}") == 0
    captured = capsys.readouterr()
    assert "labelled 3 answers" in captured.out and "1 failed" in captured.out
    assert "warning: decision d2 not labelled: the judge gave no 1-10 rating: 'Hmm, hard to say" in captured.err
    assert [(d, m) for d, m, *_ in feedback(sqlite_url)] == [("d1", None), ("d1", "large"), ("d5", None)]


def test_a_judge_that_never_rates_fails_the_run_and_stores_nothing(sqlite_url, judge, capsys):
    fill(sqlite_url, {"d1": "mumble", "d2": "mumble", "d5": "mumble"})
    with open_store(sqlite_url) as store:  # the shadow answer too
        store.record_shadow_outcome("d1", model="large", status="ok", cost_usd=0.01, latency_s=1.0, tokens_in=10,
                                    tokens_out=5, response="mumble")
    assert run("--store", sqlite_url, "--judge", f"{JUDGE}@{judge.base_url}") == 2
    error = one_line_error(capsys)
    assert error.startswith("crossroads: error: every one of the 4 answers failed, none was stored; the first "
                            "(decision d1): the judge gave no 1-10 rating: 'Hmm, hard to say")
    assert feedback(sqlite_url) == []


def test_an_unreachable_judge_is_one_clear_error(sqlite_url, capsys):
    fill(sqlite_url)
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert run("--store", sqlite_url, "--judge", f"{JUDGE}@{url}", "--max-retries", "0") == 2
    error = one_line_error(capsys)
    assert f"judge {url}/chat/completions failed 1 times for model '{JUDGE}'" in error
    assert "could not connect" in error and "(0 labels were stored before; rerun to resume)" in error
    assert feedback(sqlite_url) == []


@pytest.mark.parametrize("argv, message", [
    (["--judge", "@http://x/v1"], "--judge '@http://x/v1' names no model: write MODEL or MODEL@BASE_URL"),
    (["--judge", "m@localhost:8000"], "--judge 'm@localhost:8000': 'localhost:8000' is not an http(s) base URL"),
    (["--scorer", "exact"], "scorer 'exact' compares each answer with a reference answer, and a store holds none"),
    (["--scorer", "nope"], "unknown scorer 'nope'"),
])
def test_bad_options_are_one_line_errors(sqlite_url, capsys, argv, message):
    fill(sqlite_url)
    assert run("--store", sqlite_url, *argv) == 2
    assert message in one_line_error(capsys)
    assert feedback(sqlite_url) == []


def test_store_errors_are_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert run("--store", f"sqlite://{missing}", "--judge", "m@http://127.0.0.1:9/v1") == 2
    assert one_line_error(capsys) == f"crossroads: error: no store at {missing}: give the `store:` URL the server " \
                                     "was run with"
    assert not missing.exists()
    assert run("--store", "mysql://db/x", "--judge", "m@http://127.0.0.1:9/v1") == 2
    assert "unknown store url 'mysql://db/x'" in one_line_error(capsys)
    newer = tmp_path / "newer.db"
    with open_store(f"sqlite://{newer}"):
        pass
    with closing(sqlite3.connect(newer)) as conn, conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_s) VALUES (99, 0)")
    assert run("--store", f"sqlite://{newer}", "--judge", "m@http://127.0.0.1:9/v1") == 2
    assert "has schema version 99, created by a newer crossroads" in one_line_error(capsys)


# -- scorers --------------------------------------------------------------------------------------
def test_a_scorer_labels_with_references_matched_by_prompt(sqlite_url, tmp_path, capsys):
    fill(sqlite_url, {"d1": "4", "d2": "five"})
    references = tmp_path / "refs.jsonl"
    references.write_text(json.dumps({"prompt": "What is 2+2?", "reference": "4"}) + "\n"
                          + json.dumps({"prompt": "And 3+1?", "reference": "4"}) + "\n", encoding="utf-8")
    assert run("--store", sqlite_url, "--scorer", "exact", "--references", str(references)) == 0
    out = capsys.readouterr().out
    assert feedback(sqlite_url) == [("d1", None, "scorer:exact", 1.0, None), ("d1", "large", "scorer:exact", 0.0, None),
                                    ("d2", None, "scorer:exact", 0.0, None)]
    assert "labelled 3 answers as scorer:exact (mean quality 0.333)" in out
    assert "1 without a reference answer, skipped" in out  # d5's prompt has none
    references.write_text('{"prompt": "What is 2+2?"}\n', encoding="utf-8")
    assert run("--store", sqlite_url, "--scorer", "exact", "--references", str(references)) == 2
    assert 'refs.jsonl:1: expected {"prompt": "...", "reference": "..."}' in one_line_error(capsys)


# -- a real judge -----------------------------------------------------------------------------------
def test_gemma_as_the_judge_labels_or_reports_cleanly(sqlite_url, local_model, capsys):
    with open_store(sqlite_url) as store:
        for i, (prompt, answer) in enumerate([("What is the capital of France?", "Paris is the capital of France."),
                                              ("What is 2+2?", "2+2 is 5.")]):
            store.record_decision(f"g{i}", route="auto", model="small", learner_key="auto", candidates=["small"],
                                  probability=1.0, scores=None, context=None, created_s=float(i), prompt=prompt)
            store.record_outcome(f"g{i}", model="small", status="ok", cost_usd=0.0, latency_s=0.1, ttft_s=0.1,
                                 tokens_in=10, tokens_out=5, fallbacks=0, response=answer)
    # Short verdicts keep this quick on a busy CPU (a 64-token verdict took 50 s on 2 loaded cores).
    code = run("--store", sqlite_url, "--judge", f"{local_model.model}@{local_model.base_url}", "-c", "1",
               "--max-tokens", "16", "--max-retries", "0")
    captured = capsys.readouterr()
    rows = feedback(sqlite_url)
    if code == 0:  # gemma rated at least one answer: those are stored, in [0, 1], and any other was reported
        assert 1 <= len(rows) <= 2
        for _, model, source, quality, payload in rows:
            assert model is None and source == f"judge:{local_model.model}" and 0.0 <= quality <= 1.0
            assert quality == pytest.approx((payload["rating"] - 1) / 9)
        assert f"labelled {len(rows)} answers" in captured.out
        assert captured.err.count("not labelled: the judge gave no 1-10 rating") == 2 - len(rows)
    else:  # a 270M model may never give a rating: then the run says so in one line and stores nothing
        assert code == 2 and rows == []
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("crossroads: error: every one of the 2 answers failed"), lines
