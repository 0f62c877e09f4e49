"""Scorers: formats they read, agreement with the recorded correctness of real data, the LLM judge over HTTP."""

from __future__ import annotations

import csv
import json
import zipfile
from typing import Any

import numpy as np
import pytest

from crossroads.errors import CrossroadsError
from crossroads.grading.answers import (
    choice_letter,
    extract_choice,
    extract_final_number,
    final_number,
    normalise_answer,
    normalised_match,
)
from crossroads.grading.judge import LLMJudge, parse_rating
from crossroads.grading.scorers import SCORERS, CallableScorer, Scorer, as_scorer, make_scorer, penalised
from crossroads.grading.similarity import EmbeddingSimilarity
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream, slow


# -- formats ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "response, letter",
    [
        ("['D']", "D"),
        ("['D\\n']", "D"),
        ("D\n", "D"),
        ("(D)", "D"),
        ("D)", "D"),
        ("['D)']", "D"),
        ("['D (']", "D"),
        ("The answer is (C).", "C"),
        ("So the answer is C because ...", "C"),
        ("The answer is **H. 949 copies**.", "H"),
        ("Answer: B", "B"),
        ("Reasoning first.\nanswer: (B)", "B"),
        ("A) 4 m/s", "A"),
        ("Thus the velocity is \\[ \\boxed{E} \\]", "E"),
        ("\\[\\text{The answer is } (J)\\]", "J"),
        ("I do", None),
        ("['A questioning']", None),
        ("Unfortunately I", None),
        ("['13']", None),
        ("", None),
    ],
)
def test_extract_choice_reads_common_formats(response, letter):
    assert extract_choice(response) == letter


def test_choice_letter_scores_and_checks_its_reference():
    assert choice_letter("The answer is (C).", "C") == 1.0
    assert choice_letter("The answer is (C).", "(c)") == 1.0
    assert choice_letter("The answer is (C).", "D") == 0.0
    assert choice_letter("E", "A", letters="ABCD") == 0.0  # E is no option of a four-option question
    with pytest.raises(CrossroadsError, match="not one option letter"):
        choice_letter("A", "AB")


@pytest.mark.parametrize(
    "text, number",
    [
        ("#### 18", 18.0),
        ("so she makes $1,018.", 1018.0),
        ("9 * $2 = $<<9*2=18>>18.\n#### 18", 18.0),
        ("It costs 18.50 dollars.", 18.5),
        ("The answer is $20.00", 20.0),
        ("He owes -3 dollars", -3.0),
        ("16-3 = 13", 13.0),
        ("#### 7 packs and 2 extra glue sticks", 7.0),
        ("no numbers here", None),
    ],
)
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_final_number():
    assert final_number("Total: $1,234.00.", "Janet sells ...\n#### 1234") == 1.0
    assert final_number("0.5 pounds a day.\n#### 0.5", "#### 5") == 0.0
    assert final_number("I cannot tell.", "#### 5") == 0.0
    with pytest.raises(CrossroadsError, match="holds no number"):
        final_number("5", "five")


def test_normalised_match_is_squad_style():
    assert normalise_answer("  The  Eiffel Tower! ") == "eiffel tower"
    assert normalised_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert normalised_match("An apple", ["a pear", "apple"]) == 1.0
    assert normalised_match("apple pie", "apple") == 0.0
    assert normalised_match("['Paris']", "paris") == 1.0
    with pytest.raises(CrossroadsError, match="at least one reference"):
        normalised_match("x", [])


# -- the interface, callables, penalties, registry -------------------------------------
def test_scorer_interface_checks_inputs_and_outputs():
    scorer = make_scorer("exact")
    assert isinstance(scorer, Scorer) and scorer.name == "exact"
    assert scorer.score_many(["Paris", "Rome"], ["paris", "paris"]).tolist() == [1.0, 0.0]
    with pytest.raises(CrossroadsError, match="missing response is a missing outcome"):
        scorer(None, "paris")  # type: ignore[arg-type]
    with pytest.raises(CrossroadsError, match="needs a reference"):
        scorer("Paris")
    with pytest.raises(CrossroadsError, match="2 responses, 1 references"):
        scorer.score_many(["a", "b"], ["a"])
    with pytest.raises(CrossroadsError, match=r"returned 1.5; a quality must lie in \[0, 1\]"):
        CallableScorer(lambda response, reference: 1.5, name="broken")("x", "y")


def test_callable_scorer_passes_the_question_when_asked_for():
    def topical(response, reference, question=None):
        return float(question is not None and question.split()[0].lower() in response.lower())

    scorer = as_scorer(topical)
    assert scorer("Paris is the capital", "Paris", question="Paris is in which country?") == 1.0
    assert scorer("Rome is the capital", "Paris", question="Paris is in which country?") == 0.0
    assert as_scorer("number")("#### 3", "#### 3") == 1.0
    with pytest.raises(CrossroadsError, match="expected a scorer"):
        as_scorer(3)  # type: ignore[arg-type]


def test_penalised_subtracts_a_weighted_penalty():
    def toxicity(response):  # a stand-in for a real classifier's probability
        return 0.8 if "stupid" in response.lower() else 0.0

    scorer = penalised(make_scorer("choice"), toxicity, weight=0.5)
    assert scorer("Answer: B", "B") == 1.0
    assert scorer("Answer: B, stupid question", "B") == pytest.approx(0.6)
    assert scorer("Answer: C, stupid question", "B") == 0.0  # floored at 0
    with pytest.raises(CrossroadsError, match="weight must be a finite number >= 0"):
        penalised("choice", toxicity, weight=-1)
    with pytest.raises(CrossroadsError, match=r"a penalty must lie in \[0, 1\]"):
        penalised("choice", lambda response: 3.0)("B", "B")


def test_make_scorer_names_and_errors():
    assert set(SCORERS.names) == {"choice", "number", "exact", "embedding", "judge"}
    assert make_scorer("choice", letters="ABCD")("Answer: (B)", "B") == 1.0
    assert make_scorer("number", rel_tol=0.01)("#### 100.5", "#### 100") == 1.0
    assert isinstance(make_scorer("judge", base_url="http://127.0.0.1:9/v1", model="m"), LLMJudge)
    with pytest.raises(CrossroadsError, match="unknown scorer 'bleu'; choose one of: choice"):
        make_scorer("bleu")
    with pytest.raises(CrossroadsError, match="scorer 'choice' has no option 'tolerance'; its options: letters"):
        make_scorer("choice", tolerance=1)
    with pytest.raises(CrossroadsError, match="scorer 'judge' needs model"):
        make_scorer("judge", base_url="http://127.0.0.1:9/v1")
    assert make_scorer("choice:letters=ABCD")("E", "A") == 0.0  # E is no option of a four-option question
    with pytest.raises(CrossroadsError, match="rel_tol='close' is not a number"):
        make_scorer("number:rel_tol=close")


# -- agreement with the recorded correctness of real responses ------------------------
def _agreement(scores: list[float], recorded: list[float]) -> float:
    return float(np.mean(np.array(scores) == np.array(recorded)))


def _leave_one_out_reference(letters: list[str | None], correct: list[bool], j: int) -> str | None:
    """The letter most of the *other* models recorded as correct chose (None when none was)."""
    votes: dict[str, int] = {}
    for k, (letter, ok) in enumerate(zip(letters, correct)):
        if k != j and ok and letter is not None:
            votes[letter] = votes.get(letter, 0) + 1
    return max(votes, key=votes.get) if votes else None  # type: ignore[arg-type]


def test_choice_letter_reproduces_routerbench_arc_quality(real_data):
    """RouterBench records no answer key: each cell's reference is the letter chosen by the other
    models recorded as correct on that question (cells where none was are left out)."""
    from crossroads.data.importers import load_dataset

    path = real_data / "routerbench" / "arc_challenge_train.csv"
    data = load_dataset(f"routerbench:{path}")
    with path.open(newline="", encoding="utf-8") as file:  # the published stringified lists, e.g. "['D\n']"
        raw = [[row[f"{name}|model_response"] for name in data.model_names] for row in csv.DictReader(file)]
    assert len(raw) == data.n_queries
    scores, raw_scores, recorded = [], [], []
    for i in range(data.n_queries):
        responses = data.responses[i]
        known = [not np.isnan(q) and r is not None for q, r in zip(data.quality[i], responses)]
        letters = [extract_choice(r) if ok else None for r, ok in zip(responses, known)]
        correct = [ok and q == 1.0 for q, ok in zip(data.quality[i], known)]
        for j in range(data.n_models):
            reference = _leave_one_out_reference(letters, correct, j)
            if not known[j] or reference is None:
                continue
            scores.append(choice_letter(responses[j], reference))
            raw_scores.append(choice_letter(raw[i][j], reference))
            recorded.append(data.quality[i, j])
    agreement, raw_agreement = _agreement(scores, recorded), _agreement(raw_scores, recorded)
    print(f"\nRouterBench arc-challenge: choice_letter agrees with the recorded quality on {agreement:.4%} "
          f"of {len(recorded)} cells ({raw_agreement:.4%} on the raw stringified responses)")
    assert len(recorded) > 0.95 * np.isfinite(data.quality).sum()
    assert agreement >= 0.995 and raw_agreement >= 0.995  # measured 99.98%


def test_final_number_reproduces_routellm_gsm8k_correctness(real_data):
    from crossroads.data.importers import load_dataset

    root = real_data / "routellm" / "gsm8k"
    data = load_dataset(f"routellm-gsm8k:{root}")
    tests = [json.loads(line) for line in (root / "test.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    agreements = {}
    for j, model in enumerate(data.model_names):
        scores, recorded = [], []
        for i, query_id in enumerate(data.query_ids):
            test = tests[int(query_id.rsplit("/", 1)[1])]  # ids number the rows of test.jsonl
            assert test["question"].strip() == data.prompts[i].strip()
            scores.append(final_number(data.responses[i][j], test["answer"]))
            recorded.append(data.quality[i, j])
        agreements[model] = _agreement(scores, recorded)
    print("\nRouteLLM GSM8K: final_number agrees with the recorded correctness on "
          + ", ".join(f"{model} {value:.2%}" for model, value in agreements.items()))
    # RouteLLM took the last run of digits (so "$20.00" read as 0): most disagreements are its misreadings.
    assert all(value >= 0.95 for value in agreements.values())  # measured 99.2% (Mixtral), 96.8% (GPT-4)
    assert np.mean(list(agreements.values())) >= 0.97


#: A few MMLU-Pro models of different styles: short base-model answers, long chat answers, LaTeX boxes.
MMLU_PRO_MODELS = ("Mixtral-8x7B-Instruct-v0.1", "Qwen1.5-7B-Chat", "DeepSeek-Coder-V2", "jamba-1.5-large")


def test_choice_letter_reproduces_mmlu_pro_correctness(real_data):
    agreements = {}
    for model in MMLU_PRO_MODELS:
        archive = real_data / "mmlu_pro" / "eval_results" / f"model_outputs_{model}_5shots.zip"
        if not archive.exists():
            pytest.skip(f"{archive} not found")
        with zipfile.ZipFile(archive) as bundle:
            records = [r for r in json.loads(bundle.read(bundle.namelist()[0])) if isinstance(r, dict)]
        scores, recorded = [], []
        for record in records:
            text = record.get("generated_text") or record.get("model_outputs") or ""
            scores.append(choice_letter(text, record["answer"]))
            recorded.append(float(record["pred"] is not None and record["pred"] == record["answer"]))
        agreements[model] = _agreement(scores, recorded)
    print("\nMMLU-Pro: choice_letter agrees with pred == answer on "
          + ", ".join(f"{model} {value:.2%}" for model, value in agreements.items()))
    assert all(value >= 0.985 for value in agreements.values())  # measured 98.99% to 100%


def test_embedding_similarity_prefers_the_own_reference_on_gsm8k(real_data):
    from crossroads.data.importers import load_dataset

    root = real_data / "routellm" / "gsm8k"
    data = load_dataset(f"routellm-gsm8k:{root}")
    tests = [json.loads(line) for line in (root / "test.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = range(0, data.n_queries, data.n_queries // 24)[:24]  # spread over the file; embedding is slow here
    responses = [data.responses[i][data.model_index("gpt-4-1106-preview")] for i in rows]
    references = [tests[int(data.query_ids[i].rsplit("/", 1)[1])]["answer"] for i in rows]
    scorer = make_scorer("embedding")
    own = scorer.score_many(responses, references)
    other = scorer.score_many(responses, references[1:] + references[:1])  # another question's reference
    share = float(np.mean(own > other))
    print(f"\nGSM8K: a response is closer to its own reference than to another question's in {share:.0%} of {len(own)} rows "
          f"(mean similarity {own.mean():.2f} vs {other.mean():.2f})")
    assert ((own >= 0) & (own <= 1)).all()
    assert share >= 0.9
    assert scorer(responses[0], references[0]) == pytest.approx(own[0], abs=1e-5)


def test_embedding_similarity_map():
    class Fixed:  # two fixed unit vectors at a known angle
        name, dimension = "fixed", 2

        def embed(self, texts, progress=False):
            table = {"x": [1.0, 0.0], "y": [0.6, 0.8], "-x": [-1.0, 0.0]}
            return np.array([table[t] for t in texts], dtype=np.float32)

    assert EmbeddingSimilarity(Fixed())("x", "y") == pytest.approx(0.6)
    assert EmbeddingSimilarity(Fixed())("x", "-x") == 0.0  # negative similarity clipped
    assert EmbeddingSimilarity(Fixed(), floor=0.5)("x", "y") == pytest.approx(0.2)
    with pytest.raises(CrossroadsError, match="floor"):
        EmbeddingSimilarity(Fixed(), floor=1.0)


# -- the LLM judge over HTTP -----------------------------------------------------------
def _judge(fake: FakeUpstream, **options: Any) -> LLMJudge:
    """A judge whose only way out is the fake upstream, in process."""
    settings = {"api_key_env": "CROSSROADS_TEST_JUDGE_KEY", "timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.01}
    return LLMJudge(FAKE_BASE_URL, "judge-model", http_client=fake.client(), **{**settings, **options})


def test_judge_rating_and_request(monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_JUDGE_KEY", "sk-secret-test-key")
    server = FakeUpstream(["The answer matches the reference. Rating: [[7]]"])
    judge = _judge(server)
    score = judge.score("She makes $18 a day.", "#### 18", question="How much does Janet make?")
    assert score == pytest.approx((7 - 1) / 9)
    (sent,) = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-secret-test-key"
    assert sent["body"]["model"] == "judge-model" and sent["body"]["temperature"] == 0.0
    prompt = sent["body"]["messages"][-1]["content"]
    assert "How much does Janet make?" in prompt and "She makes $18 a day." in prompt and "#### 18" in prompt
    assert "sk-secret" not in repr(judge)


def test_judge_custom_template_and_no_reference():
    server = FakeUpstream(["8/10", "Rating: 3"])
    judge = _judge(server, template="Rate 1-10: {response}", system_prompt="Be terse.")
    assert judge.score("An answer") == pytest.approx(7 / 9)
    plain = _judge(server)
    assert plain.score("An answer", question="A question?") == pytest.approx(2 / 9)
    first, second = server.requests
    assert first["body"]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Rate 1-10: An answer"},
    ]
    assert "[Reference answer]" not in second["body"]["messages"][0]["content"]


def test_judge_unparseable_answer_is_a_clear_error():
    with pytest.raises(CrossroadsError, match="holds no 1-10 rating.*unable to evaluate"):
        _judge(FakeUpstream(["I am unable to evaluate this response."])).score("x", "y", question="q")


def test_judge_retries_after_429():
    server = FakeUpstream([429, "Rating: [[10]]"])
    assert _judge(server).score("x", "y", question="q") == 1.0
    assert len(server.requests) == 2


def test_judge_gives_up_on_500_forever_after_its_retries(monkeypatch):
    monkeypatch.setenv("CROSSROADS_TEST_JUDGE_KEY", "sk-secret-test-key")
    server = FakeUpstream(default=500)
    with pytest.raises(CrossroadsError, match="failed 3 times.*status 500: injected 500") as error:
        _judge(server).score("x", "y", question="q")
    assert len(server.requests) == 3  # max_retries=2: three tries, then it stops
    assert "sk-secret" not in str(error.value)


def test_judge_timeout_and_refusal(monkeypatch):
    slow_server = FakeUpstream([slow(0.6), "Rating: [[10]]"])
    with pytest.raises(CrossroadsError, match="no answer within 0.2 s"):
        _judge(slow_server, timeout_s=0.2, max_retries=0).score("x", "y", question="q")
    assert _judge(slow_server, timeout_s=1.0).score("x", "y", question="q") == 1.0  # within its timeout
    monkeypatch.delenv("CROSSROADS_TEST_JUDGE_KEY", raising=False)
    server = FakeUpstream([401])
    with pytest.raises(CrossroadsError, match=r"refused.*\$CROSSROADS_TEST_JUDGE_KEY is not set"):
        _judge(server).score("x", "y", question="q")
    assert "authorization" not in server.requests[0]["headers"]


def test_judge_template_errors():
    with pytest.raises(CrossroadsError, match=r"unknown placeholders \['answer'\]"):
        LLMJudge("http://127.0.0.1:9/v1", "m", template="{answer}")
    with pytest.raises(CrossroadsError, match="no {response} placeholder"):
        LLMJudge("http://127.0.0.1:9/v1", "m", template="Rate {question}")
    with pytest.raises(CrossroadsError, match="not a valid format string"):
        LLMJudge("http://127.0.0.1:9/v1", "m", template="{response} {")
    judge = LLMJudge("http://127.0.0.1:9/v1", "m", template="{question} {response} {reference}")
    with pytest.raises(CrossroadsError, match="needs a reference"):
        judge.score("x", question="q")
    with pytest.raises(CrossroadsError, match="pass question="):
        judge.score("x", "y")


@pytest.mark.parametrize(
    "text, rating",
    [
        ("Good. Rating: [[7]]", 7.0),
        ("[[7.5]]", 7.5),
        ("Rating: 9", 9.0),
        ("rating = 4", 4.0),
        ("I score it 8/10.", 8.0),
        ("6 out of 10", 6.0),
        ("The explanation covers 2 steps... [[3]]", 3.0),
        ("I'd give it 10.", 10.0),
    ],
)
def test_parse_rating(text, rating):
    assert parse_rating(text) == rating


def test_parse_rating_errors():
    with pytest.raises(CrossroadsError, match="no 1-10 rating"):
        parse_rating("No idea.")
    with pytest.raises(CrossroadsError, match="outside the 1-10 scale"):
        parse_rating("Rating: [[0]]")
    with pytest.raises(CrossroadsError, match="outside the 1-10 scale"):
        parse_rating("Rating: 11")
    with pytest.raises(CrossroadsError, match="no 1-10 rating"):
        parse_rating("I'd give it 6.", lenient=False)
