"""Questions that recur across datasets are found by normalised text and kept out of training."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from synthetic import make_dataset

from crossroads.cli.main import main
from crossroads.data.dedup import overlap, question_key
from crossroads.data.jsonl import write_jsonl

MMLU = "Which of the following is a prime number?\nA. 4\nB. 6\nC. 7\nD. 9"
#: The same question as MMLU-Pro asks it: other spacing and case, ten options in another style.
MMLU_PRO = ("which of the following  is a PRIME number ?\n(A) 4\n(B) 6\n(C) 7\n(D) 9\n(E) 10\n(F) 12\n(G) 14\n"
            "(H) 15\n(I) 16\n(J) 18")
OTHER = "Which of the following is an even number?\nA. 3\nB. 5\nC. 8\nD. 9"


def test_the_same_question_with_other_options_and_spacing_has_one_key():
    assert question_key(MMLU) == question_key(MMLU_PRO) == "which of the following is a prime number"
    assert question_key(OTHER) != question_key(MMLU)


def test_short_stems_keep_their_options_in_the_key():
    """'Pick one:' alone would make every such question a duplicate of every other."""
    assert question_key("Pick one:\nA. red\nB. blue") != question_key("Pick one:\nA. cat\nB. dog")


def test_overlap_marks_exactly_the_recurring_training_questions():
    train = [MMLU, OTHER, "What is 2 + 2?", " what is 2+2 ?", "What is 2 + 3?", "Name a colour."]
    test = [MMLU_PRO, "WHAT IS 2 + 2"]
    assert overlap(train, test).tolist() == [True, False, True, True, False, False]


def _dataset(prompts, seed):
    rng = np.random.default_rng(seed)
    data = make_dataset(rng.random((len(prompts), 2)))
    data.prompts = list(prompts)
    return data


def test_eval_train_test_removes_and_reports_duplicates(tmp_path, capsys):
    train_prompts = [f"Training question number {i} about topic {i % 7}?" for i in range(60)]
    test_prompts = [f"Held-out question number {i} about topic {i % 5}?" for i in range(40)]
    train_prompts[:6] = [p.upper() + "  " for p in test_prompts[:6]]  # six known overlaps, shouted
    train = write_jsonl(_dataset(train_prompts, 0), tmp_path / "train.jsonl")
    test = write_jsonl(_dataset(test_prompts, 1), tmp_path / "test.jsonl")
    runs = {}
    for flag in ([], ["--keep-duplicates"]):
        out = tmp_path / ("kept" if flag else "deduped")
        assert main(["eval", "--train", f"crossroads:{train}", "--test", f"crossroads:{test}", "--router", "ridge",
                     "--out", str(out), *flag]) == 0
        runs[bool(flag)] = json.loads((out / "metrics.json").read_text())["setup"]
    assert runs[False]["duplicates_removed"] == 6 and runs[True]["duplicates_removed"] == 0
    assert "removed 6 training queries whose question appears in the test set" in capsys.readouterr().out


def test_training_on_the_test_set_itself_is_refused(tmp_path, capsys):
    same = write_jsonl(_dataset([f"Question {i} about something long enough?" for i in range(10)], 0),
                       tmp_path / "same.jsonl")
    assert main(["eval", "--train", f"crossroads:{same}", "--test", f"crossroads:{same}", "--router", "ridge",
                 "--out", str(tmp_path / "out")]) == 2
    assert "every one of the 10 training queries also appears in the test set" in capsys.readouterr().err


def test_train_can_keep_a_benchmark_unseen_and_records_its_provenance(tmp_path):
    benchmark = [f"Benchmark question {i} on subject {i % 3}, asked in full?" for i in range(20)]
    own = [f"Other question {i} on subject {i % 4}, asked in full?" for i in range(50)]
    train = write_jsonl(_dataset(own[:45] + [b.lower() for b in benchmark[:5]], 2), tmp_path / "train.jsonl")
    unseen = write_jsonl(_dataset(benchmark, 3), tmp_path / "benchmark.jsonl")
    out = tmp_path / "router.npz"
    assert main(["train", "--dataset", f"crossroads:{train}", "--exclude-questions", f"crossroads:{unseen}",
                 "--router", "ridge", "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["training_queries_removed"] == 5 and record["queries"] == 45
    assert record["data"] == [f"crossroads:{train}"] and record["excluded_questions_of"] == [f"crossroads:{unseen}"]
    assert record["file_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert record["router"] == "ridge" and record["command"] == f"crossroads train --dataset crossroads:{train} --exclude-questions crossroads:{unseen} --router ridge --out {out}"
