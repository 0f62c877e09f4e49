"""Importers: small fixtures in each published format, the real shared data, and clear errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from crossroads.data.importers import FORMATS, load_dataset, load_datasets
from crossroads.data.pricing import price_for, read_price_file, size_based_price
from crossroads.errors import CrossroadsError, DataFormatError
from crossroads.objective.cost import estimate_tokens
from crossroads.paths import shared_data_dir

FIXTURES = Path(__file__).parent / "fixtures"
GPT4 = "gpt-4-1106-preview"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def shared(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.exists():
        pytest.skip(f"real data {path} not found: set CROSSROADS_DATA to the shared data directory (default ../shared/data)")
    return path


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


# ---------------------------------------------------------------- fixtures


def test_routellm_mmlu_drops_contaminated_prompts_and_estimates_costs():
    ds = load_dataset(f"routellm-mmlu:{fixture('routellm/mmlu')}")
    assert ds.query_ids == [
        "routellm-mmlu/anatomy/0", "routellm-mmlu/anatomy/1", "routellm-mmlu/anatomy/3",
        "routellm-mmlu/virology/0", "routellm-mmlu/virology/1",
    ]
    assert ds.model_names == [MIXTRAL, GPT4]
    assert ds.categories[:3] == ["anatomy"] * 3
    assert ds.quality.tolist()[1] == [0.0, 1.0]
    assert ds.prompts[1].endswith("D. Sweat glands") and ds.full_prompts[1].endswith("Answer:")
    assert ds.cost_estimated == [True, True]
    assert ds.models[1].price_per_mtok_in == 10.0 and ds.models[1].price_per_mtok_out == 30.0
    # GPT-4 costs about 10/0.6 times Mixtral on the same prompt (one output token each)
    assert np.all(ds.cost_usd[:, 1] / ds.cost_usd[:, 0] > 15)
    assert load_dataset(f"routellm-mmlu:{fixture('routellm/mmlu')}", decontaminate=False).n_queries == 6


def test_routellm_gsm8k_keeps_responses_and_costs_follow_their_length():
    ds = load_dataset(f"routellm-gsm8k:{fixture('routellm/gsm8k/gsm8k_responses.csv')}")
    same = load_dataset(f"routellm-gsm8k:{fixture('routellm/gsm8k')}")
    assert ds.query_ids == same.query_ids == ["routellm-gsm8k/0", "routellm-gsm8k/2"]
    assert ds.responses[0][0].startswith(" Janet starts with 16 eggs")
    assert ds.quality.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert ds.categories == ["gsm8k", "gsm8k"]
    # same price for in and out: Mixtral's cost difference between rows is input + output length
    assert ds.cost_usd[0, 0] > ds.cost_usd[1, 0]


def test_routellm_mtbench_quality_is_the_mean_of_both_turns():
    ds = load_dataset(f"routellm-mtbench:{fixture('routellm/mt_bench')}")
    # question 81 is contaminated (its first turn is an eval_prompt)
    assert ds.query_ids == ["routellm-mtbench/101", "routellm-mtbench/111", "routellm-mtbench/155"]
    assert ds.categories == ["reasoning", "math", "humanities"]
    assert ds.model_names == [GPT4, MIXTRAL]
    assert ds.prompts[0].startswith("Imagine you are participating in a race")
    strong, weak = ds.quality[0]
    assert strong == pytest.approx(((10 - 1) / 9 + (7 - 1) / 9) / 2)
    assert weak == pytest.approx(((2 - 1) / 9 + 0.0) / 2)
    # score -1 on turn 2 (no rating): only turn 1 counts
    assert ds.quality[1, 1] == pytest.approx(0.0)
    assert ds.cost_estimated == [True, True] and np.all(ds.cost_usd > 0)
    # tokens: turn 1, then turn 1 + answer 1 + turn 2 in; both answers (quoted by the judge prompts) out
    turn1 = estimate_tokens(ds.prompts[2])
    turn2 = estimate_tokens("Write a concrete plan for your second example. Include budget estimates.")
    answer1, answer2 = estimate_tokens("Kids could colour in famous paintings."), estimate_tokens("Budget: some money.")
    expected = ((2 * turn1 + answer1 + turn2) + (answer1 + answer2)) * 0.6 / 1e6
    assert ds.cost_usd[2, 1] == pytest.approx(expected)
    assert load_dataset(f"routellm-mtbench:{fixture('routellm/mt_bench')}", decontaminate=False).n_queries == 4


def test_routellm_mtbench_works_without_a_contamination_list(tmp_path):
    directory = copy_fixture("routellm/mt_bench", tmp_path)
    (directory / "contaminated_prompts.jsonl").unlink()
    assert load_dataset(f"routellm-mtbench:{directory}").n_queries == 4


def test_routerbench_keeps_empty_cells_missing_and_real_costs():
    ds = load_dataset(f"routerbench:{fixture('routerbench')}")
    assert ds.n_queries == 5 and ds.n_models == 3
    assert ds.query_ids[:3] == [
        "routerbench/arc-challenge.test.1108",
        "routerbench/arc-challenge.val.208@1684",
        "routerbench/arc-challenge.val.208@1685",
    ]
    assert np.isnan(ds.quality).sum() == 3
    assert np.isnan(ds.cost_usd).sum() == 1
    assert ds.cost_usd[0, 0] == 0.00533 and ds.cost_estimated == [False] * 3
    assert ds.categories == ["arc-challenge"] * 3 + ["mbpp", "winogrande"]
    assert ds.prompts[0].startswith("Research is being conducted") and "Answer" not in ds.prompts[0]
    assert ds.prompts[1] == ds.prompts[2]  # a list repeating the prompt gives it once
    assert ds.prompts[4].endswith("A) caffeine\nB) sugar")
    assert ds.full_prompts[4].startswith("Please answer with the letter")
    assert ds.full_prompts[3] is None  # mbpp prompts are bare
    assert ds.responses[0] == ["D", "D\n", "A\n"] and ds.responses[2][2] is None
    one_file = load_dataset(f"routerbench:{fixture('routerbench/mbpp_train.csv')}")
    assert one_file.query_ids == ["routerbench/mbpp.dev.92"] and one_file.sources == ["routerbench/mbpp_train.csv"]


def test_mmlu_pro_reads_zips_and_estimates_costs():
    ds = load_dataset(f"mmlu-pro:{fixture('mmlu_pro')}")
    assert ds.model_names == ["Llama-2-7b-hf", "gemini-1.5-pro-002"]
    assert ds.query_ids == ["mmlu-pro/70", "mmlu-pro/3012", "mmlu-pro/11285"]
    assert ds.categories == ["business", "math", "engineering"]
    # pred == answer; a null pred is wrong; a question absent from a file is missing
    assert ds.quality[:, 0].tolist() == [0.0, 0.0, 1.0]
    assert ds.quality[:2, 1].tolist() == [1.0, 1.0] and np.isnan(ds.quality[2, 1])
    assert np.isnan(ds.cost_usd[2, 1]) and np.all(ds.cost_usd[:, 0] > 0)
    assert ds.prompts[1] == "Find the characteristic of the ring 2Z.\n" + "\n".join(
        f"{letter}. {option}" for letter, option in zip("ABCDEFGHIJ", ["0", "3", "12", "30", "50", "2", "100", "20", "5", "10"])
    )
    assert ds.models[1].price_per_mtok_in == 1.25 and ds.cost_estimated == [True, True]
    assert ds.responses is None
    with_text = load_dataset(f"mmlu-pro:{fixture('mmlu_pro/eval_results')}", responses=True)
    assert with_text.responses[1][1] == "The characteristic of 2Z is 0. The answer is (A)."


def test_llmrouter_reads_dict_and_stringified_scores_with_prices_beside():
    ds = load_dataset(f"llmrouter:{fixture('llmrouter/dcrouter_train.json')}")
    assert ds.n_queries == 3 and ds.n_models == 3
    assert ds.quality[2].tolist() == [0.6666666667, 0.0, 1.0]
    assert [m.price_per_mtok_in for m in ds.models] == [0.2, 0.2, 0.9]
    assert ds.categories == ["cluster-0", "cluster-1", "cluster-2"]
    assert ds.prompts[0].startswith("There are 2 houses") and ds.full_prompts[0].startswith("Q: ")
    tokens_in = estimate_tokens(ds.full_prompts[0])
    assert ds.cost_usd[0, 0] == pytest.approx((tokens_in + 256) * 0.2 / 1e6)
    longer = load_dataset(f"llmrouter:{fixture('llmrouter')}", output_tokens=1000)
    assert np.all(longer.cost_usd > ds.cost_usd)


def test_llmrouter_prices_option_and_missing_prices(tmp_path):
    (tmp_path / "train.json").write_text((FIXTURES / "llmrouter/dcrouter_train.json").read_text())
    unpriced = load_dataset(f"llmrouter:{tmp_path / 'train.json'}")
    assert np.isnan(unpriced.cost_usd).all() and unpriced.models[0].price_per_mtok_in is None
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"qwen2.5-7b-instruct": {"price_per_mtok_in": 1.0, "price_per_mtok_out": 2.0}}))
    priced = load_dataset(f"llmrouter:{tmp_path / 'train.json'}", prices=str(prices))
    assert priced.models[0].price_per_mtok_out == 2.0 and not np.isnan(priced.cost_usd[:, 0]).any()


def test_routerdc_reads_a_directory_of_task_files():
    ds = load_dataset(f"routerdc:{fixture('routerdc')}")
    assert ds.query_ids == ["routerdc/cmmlu/0", "routerdc/gsm8k/0", "routerdc/mmlu/0", "routerdc/mmlu/1"]
    assert ds.categories == ["cmmlu", "gsm8k", "mmlu", "mmlu"]
    assert ds.prompts[0].endswith("D. 铁芯") and ds.prompts[3].startswith("When a cup of water")
    assert all(m.price_per_mtok_in == 0.2 for m in ds.models) and all(ds.cost_estimated)
    one = load_dataset(f"routerdc:{fixture('routerdc/gsm8k-train.json')}")
    assert one.query_ids == ["routerdc/gsm8k/0"] and one.quality[0].tolist() == [1.0, 1.0, 0.9]


def test_load_datasets_combines_pools():
    ds = load_datasets([f"routellm-mmlu:{fixture('routellm/mmlu')}", f"routerbench:{fixture('routerbench')}"])
    assert ds.n_queries == 10
    assert set(ds.model_names) == {MIXTRAL, GPT4, "mistralai/mixtral-8x7b-chat", "meta/llama-2-70b-chat"}
    j = ds.model_index("meta/llama-2-70b-chat")
    assert np.isnan(ds.quality[:5, j]).all()  # absent from RouteLLM: missing, not zero


def test_every_format_has_a_loader_that_takes_a_path():
    for name in FORMATS.names:
        assert FORMATS.spec(f"{name}:x").params["path"] == "x"


def test_token_estimate_and_prices():
    assert estimate_tokens("") == 0 and estimate_tokens(None) == 0
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens("运行中变压器") == 6  # one token per CJK character
    assert price_for("gpt-4-1106-preview").price_per_mtok_out == 30.0
    assert price_for("some-org/Unknown-13b-chat") == size_based_price(13)
    assert price_for("Mixtral-8x22B").price_per_mtok_in == 1.20
    assert price_for("claude-v2") is None
    prices = read_price_file(FIXTURES / "llmrouter/default_llm.json")
    assert prices["llama3-chatqa-1.5-70b"].price_per_mtok_in == 0.9


# ---------------------------------------------------------------- errors


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(CrossroadsError) as error:
        load_dataset("routerbnch:somewhere")
    assert "unknown dataset format 'routerbnch'" in str(error.value) and "routellm-mtbench" in str(error.value)
    with pytest.raises(CrossroadsError, match="FORMAT:PATH"):
        load_dataset("routerbench")


def test_unknown_option_is_named():
    with pytest.raises(CrossroadsError, match=r"no option 'colour'; its options: path, prices \(default None\), "
                                              r"output_tokens \(default 256\)"):
        load_dataset(f"llmrouter:{fixture('llmrouter')}", colour="red")


def test_importer_options_come_after_the_path_and_are_converted(tmp_path):
    path = FIXTURES / "llmrouter" / "dcrouter_train.json"
    default = load_dataset(f"llmrouter:{path}")
    longer = load_dataset(f"llmrouter:{path},output_tokens=1000")
    assert (np.nan_to_num(longer.cost_usd) >= np.nan_to_num(default.cost_usd)).all()
    assert np.nanmean(longer.cost_usd) > np.nanmean(default.cost_usd)
    with pytest.raises(CrossroadsError, match="output_tokens='many' is not a number"):
        load_dataset(f"llmrouter:{path},output_tokens=many")


def test_missing_path():
    with pytest.raises(DataFormatError) as error:
        load_dataset("routerbench:/no/such/dir")
    assert "/no/such/dir" in str(error.value) and "no such file" in str(error.value)


def test_csv_without_prompt_column(tmp_path):
    bad = tmp_path / "arc.csv"
    rows = list(csv.reader((FIXTURES / "routerbench/arc_challenge_train.csv").open(newline="", encoding="utf-8")))
    rows[0][2] = "question"
    csv.writer(bad.open("w", newline="", encoding="utf-8")).writerows(rows)
    with pytest.raises(DataFormatError) as error:
        load_dataset(f"routerbench:{bad}")
    message = str(error.value)
    assert str(bad) in message and "row 0" in message and "no 'prompt' among its columns" in message


@pytest.mark.parametrize(
    "cell, expected",
    [("high", "to be a number in [0, 1]"), ("1.5", "to be a number in [0, 1]")],
)
def test_routerbench_quality_must_be_a_number_in_unit_interval(tmp_path, cell, expected):
    bad = tmp_path / "arc.csv"
    rows = list(csv.reader((FIXTURES / "routerbench/arc_challenge_train.csv").open(newline="", encoding="utf-8")))
    rows[2][rows[0].index("gpt-4-1106-preview")] = cell
    csv.writer(bad.open("w", newline="", encoding="utf-8")).writerows(rows)
    with pytest.raises(DataFormatError) as error:
        load_dataset(f"routerbench:{bad}")
    message = str(error.value)
    assert f"{bad}, row 2" in message and "'gpt-4-1106-preview'" in message and expected in message and repr(cell) in message


def test_routerbench_prompt_must_be_a_stringified_list(tmp_path):
    bad = tmp_path / "mbpp.csv"
    rows = list(csv.reader((FIXTURES / "routerbench/mbpp_train.csv").open(newline="", encoding="utf-8")))
    rows[1][2] = "['unterminated"
    csv.writer(bad.open("w", newline="", encoding="utf-8")).writerows(rows)
    with pytest.raises(DataFormatError, match=r"mbpp.csv, row 1: expected 'prompt' as a stringified Python list"):
        load_dataset(f"routerbench:{bad}")


def test_routellm_boolean_column_with_garbage(tmp_path):
    directory = copy_fixture("routellm/mmlu", tmp_path)
    file = directory / "responses/mmlu_virology.csv"
    file.write_text(file.read_text().replace(",True,True", ",yes,True", 1))
    with pytest.raises(DataFormatError) as error:
        load_dataset(f"routellm-mmlu:{directory}")
    assert "mmlu_virology.csv, row 2" in str(error.value) and "'yes'" in str(error.value)


def test_routellm_requires_the_contamination_list_unless_told(tmp_path):
    directory = copy_fixture("routellm/gsm8k", tmp_path)
    (directory / "contaminated_prompts.jsonl").unlink()
    with pytest.raises(DataFormatError, match="decontaminate=False"):
        load_dataset(f"routellm-gsm8k:{directory}")
    assert load_dataset(f"routellm-gsm8k:{directory}", decontaminate=False).n_queries == 3


def test_mtbench_score_out_of_range_and_unknown_question(tmp_path):
    directory = copy_fixture("routellm/mt_bench", tmp_path)
    lines = (directory / "judgements.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    record["score"] = 11
    lines[3] = json.dumps(record)
    (directory / "judgements.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as error:
        load_dataset(f"routellm-mtbench:{directory}")
    assert "judgements.jsonl, row 4" in str(error.value) and "'score' from 1 to 10" in str(error.value)
    record["score"], record["question_id"] = 5, 9999
    lines[3] = json.dumps(record)
    (directory / "judgements.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"row 4: expected a question_id listed in question.jsonl, found 9999"):
        load_dataset(f"routellm-mtbench:{directory}")


def test_mtbench_question_needs_two_turns(tmp_path):
    directory = copy_fixture("routellm/mt_bench", tmp_path)
    (directory / "question.jsonl").write_text('{"question_id": 1, "category": "writing", "turns": "hello"}\n')
    with pytest.raises(DataFormatError, match=r"question.jsonl, row 1: expected 'turns' as a list of two user messages"):
        load_dataset(f"routellm-mtbench:{directory}")


def test_zip_without_json_list(tmp_path):
    directory = tmp_path / "eval_results"
    directory.mkdir()
    with zipfile.ZipFile(directory / "model_outputs_X-7B_5shots.zip", "w") as bundle:
        bundle.writestr("README.txt", "no records here")
    with pytest.raises(DataFormatError, match=r"model_outputs_X-7B_5shots.zip: expected one .json file holding a list of records"):
        load_dataset(f"mmlu-pro:{directory}")
    with zipfile.ZipFile(directory / "model_outputs_X-7B_5shots.zip", "w") as bundle:
        bundle.writestr("model_outputs_X-7B_5shots.json", json.dumps({"question_id": 1}))
    with pytest.raises(DataFormatError, match="expected a JSON list of records, found a JSON dict"):
        load_dataset(f"mmlu-pro:{directory}")
    (directory / "model_outputs_X-7B_5shots.zip").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="expected a zip archive"):
        load_dataset(f"mmlu-pro:{directory}")


def test_mmlu_pro_record_missing_a_field(tmp_path):
    directory = tmp_path / "eval_results"
    directory.mkdir()
    with zipfile.ZipFile(directory / "model_outputs_X-7B_5shots.zip", "w") as bundle:
        bundle.writestr("x.json", json.dumps([{"question_id": 1, "question": "Why?", "options": ["a"], "answer": "A", "category": "other"}]))
    with pytest.raises(DataFormatError, match=r"model_outputs_X-7B_5shots.zip, row 1: expected fields .* found no pred"):
        load_dataset(f"mmlu-pro:{directory}")


def test_llmrouter_bad_scores_and_bad_json(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps([{"question": "Hi?", "scores": {"m": 0.5}}, {"question": "Why?", "scores": "not a dict"}]))
    with pytest.raises(DataFormatError, match=r"train.json, row 2: expected 'scores' as a dict"):
        load_dataset(f"llmrouter:{bad}")
    bad.write_text(json.dumps([{"question": "Hi?", "scores": {"m": 2}}]))
    with pytest.raises(DataFormatError, match=r"train.json, row 1: expected \"scores\['m'\]\" to be a number in \[0, 1\], found 2"):
        load_dataset(f"llmrouter:{bad}")
    bad.write_text('[{"question": "Hi?",\n "scores": {"m": 0.5}')
    with pytest.raises(DataFormatError, match=r"train.json, row 2, column \d+: expected valid JSON"):
        load_dataset(f"llmrouter:{bad}")
    bad.write_text(json.dumps({"question": "Hi?"}))
    with pytest.raises(DataFormatError, match="expected a JSON list of {question, scores} records, found a JSON dict"):
        load_dataset(f"routerdc:{bad}")


def test_non_utf8_csv(tmp_path):
    bad = tmp_path / "gsm8k_responses.csv"
    bad.write_bytes("prompt,a,b\ncaf\xe9,True,False\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="UTF-8"):
        load_dataset(f"routellm-gsm8k:{bad}", decontaminate=False)


# ---------------------------------------------------------------- real data


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_real_routellm_mmlu_matches_routellm_decontamination():
    root = shared("routellm/mmlu")
    ds = load_dataset(f"routellm-mmlu:{root}")  # load time: benchmarks/bench_hot_paths.py
    # RouteLLM's benchmarks.py: all_data[~all_data["prompt"].isin(contaminated eval_prompts)]
    contaminated = {json.loads(line)["eval_prompt"] for line in (root / "contaminated_prompts.jsonl").open() if line.strip()}
    raw = [row for file in sorted((root / "responses").glob("mmlu_*.csv")) for row in _csv_rows(file)]
    assert len(raw) == 14042
    assert ds.n_queries == sum(row["prompt"] not in contaminated for row in raw) == 14037
    assert ds.model_names == [MIXTRAL, GPT4] and len(set(ds.categories)) == 57
    assert np.nanmean(ds.quality[:, 1]) > np.nanmean(ds.quality[:, 0])  # GPT-4 beats Mixtral
    assert not np.isnan(ds.quality).any() and (ds.cost_usd > 0).all()


def test_real_routellm_gsm8k():
    root = shared("routellm/gsm8k")
    ds = load_dataset(f"routellm-gsm8k:{root}")
    contaminated = {json.loads(line)["eval_prompt"] for line in (root / "contaminated_prompts.jsonl").open() if line.strip()}
    raw = _csv_rows(root / "gsm8k_responses.csv")
    assert len(raw) == 1319
    assert ds.n_queries == sum(row["prompt"] not in contaminated for row in raw) == 1307
    assert all(text for row in ds.responses for text in row)


def test_real_routerbench_counts_missing_cells():
    root = shared("routerbench")
    ds = load_dataset(f"routerbench:{root}")
    assert ds.n_queries == 2225 and ds.n_models == 11
    assert len(set(ds.query_ids)) == 2225
    empty = sum(
        row[name] == ""
        for file in root.glob("*.csv")
        for row in _csv_rows(file)
        for name in ds.model_names
    )
    assert empty == 92 == int(np.isnan(ds.quality).sum())
    assert 0.003 < np.isnan(ds.quality).mean() < 0.005
    assert ds.cost_estimated == [False] * 11 and np.nanmin(ds.cost_usd) > 0
    assert sorted(set(ds.categories)) == ["arc-challenge", "mbpp", "winogrande"]
    arc = [i for i, c in enumerate(ds.categories) if c == "arc-challenge"]
    assert all("Answer:" not in ds.prompts[i] and "Answer:" in ds.full_prompts[i] for i in arc)


def test_real_routerbench_prices_explain_recorded_costs_and_calibrate_token_estimate():
    ds = load_dataset(f"routerbench:{shared('routerbench')}")
    arc = np.array([c == "arc-challenge" for c in ds.categories])
    llama = ds.model_index("meta/llama-2-70b-chat")
    tokens = ds.cost_usd[arc, llama] / 0.9 * 1e6  # open models: one price in and out
    for j, model in enumerate(ds.models):
        ratio = ds.cost_usd[arc, j] / model.price_per_mtok_in * 1e6 / tokens
        assert np.nanmedian(ratio) == pytest.approx(1.0, abs=0.01), model.name
    # gpt-3.5-turbo pays $1 in, $2 out per million tokens: recorded tokens vs our estimate
    gpt35 = ds.model_index("gpt-3.5-turbo-1106")
    for category in ("arc-challenge", "winogrande", "mbpp"):
        rows = [i for i, c in enumerate(ds.categories) if c == category and not np.isnan(ds.cost_usd[i, gpt35])]
        recorded = ds.cost_usd[rows, gpt35] * 1e6
        estimated = [estimate_tokens(ds.full_prompts[i] or ds.prompts[i]) + 2 * estimate_tokens(ds.responses[i][gpt35]) for i in rows]
        assert np.median(np.array(estimated) / recorded) == pytest.approx(1.0, abs=0.06), category


@pytest.mark.slow
def test_real_mmlu_pro_29_models():
    root = shared("mmlu_pro/eval_results")
    ds = load_dataset(f"mmlu-pro:{root}")  # load time: benchmarks/bench_hot_paths.py
    assert ds.n_models == 29 and ds.n_queries == 12032
    assert all(ds.cost_estimated) and all(m.price_per_mtok_in is not None for m in ds.models)
    flash = ds.model_index("gemini-1.5-flash-002")
    assert int(np.isnan(ds.quality[:, flash]).sum()) == 20
    with zipfile.ZipFile(root / "model_outputs_Llama-2-7b-hf_5shots.zip") as bundle:
        records = json.loads(bundle.read(bundle.namelist()[0]))
    llama = ds.model_index("Llama-2-7b-hf")
    expected = sum(r["pred"] is not None and r["pred"] == r["answer"] for r in records)
    assert int(np.nansum(ds.quality[:, llama])) == expected
    assert not math.isnan(np.nanmean(ds.cost_usd[:, llama]))


def test_real_llmrouter_prices_from_default_llm():
    root = shared("llmrouter")
    ds = load_dataset(f"llmrouter:{root / 'dcrouter_train.json'}")
    assert ds.n_queries == 5608 and ds.n_models == 9
    table = json.loads((root / "default_llm.json").read_text())
    for model in ds.models:
        assert (model.price_per_mtok_in, model.price_per_mtok_out) == (table[model.name]["input_price"], table[model.name]["output_price"])
    assert not np.isnan(ds.cost_usd).any()


def test_real_routerdc():
    ds = load_dataset(f"routerdc:{shared('routerdc7')}")
    assert ds.n_models == 7 and ds.n_queries == 7598
    assert sorted(set(ds.categories)) == ["arc_challenge", "arc_easy", "cmmlu", "gsm8k", "humaneval", "mmlu"]
    assert all(m.price_per_mtok_in == 0.2 for m in ds.models)
