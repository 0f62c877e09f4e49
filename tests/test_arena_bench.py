"""The arena-bench importer (Arena-Hard v1): a small fixture in the published layout, clear errors, the real set."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from crossroads.data.importers import load_dataset
from crossroads.data.importers.arena_bench import arena_price
from crossroads.errors import DataFormatError
from crossroads.objective.cost import estimate_tokens
from crossroads.paths import shared_data_dir

FIXTURE = Path(__file__).parent / "fixtures" / "arena_bench"
GPT4, MIXTRAL, MISTRAL = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1", "mistralai/Mistral-7B-Instruct-v0.1"


def load(path: Path = FIXTURE, **options):
    return load_dataset(f"arena-bench:{path}", **options)


def copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "arena_bench"))


def test_quality_is_the_judge_score_mapped_to_0_1_and_missing_scores_stay_missing():
    ds = load()
    assert ds.query_ids == ["arena-bench/q-line", "arena-bench/q-css", "arena-bench/q-bias"]
    # the pool is the judged models, named by the judgments (gpt-4-turbo.jsonl holds gpt-4-1106-preview);
    # vicuna-7b-v1.5 has answers but no judgments
    assert ds.model_names == [MISTRAL, MIXTRAL, GPT4]
    expected = [[0.0, 7 / 9, 1.0], [math.nan, math.nan, 8 / 9], [2 / 9, 3 / 9, 6 / 9]]  # 1 -> 0, 10 -> 1
    np.testing.assert_allclose(ds.quality, expected)  # "n/a" and null are missing, never 0
    assert ds.categories == ["arena-bench-v1", "web development", "arena-hard"]  # category, cluster, default
    assert ds.prompts[2] == "Explain cognitive bias to me as if I were ten years old."


def test_costs_are_estimated_from_question_and_answer_lengths_at_list_prices():
    ds = load()
    assert ds.cost_estimated == [True] * 3
    prices = [(m.price_per_mtok_in, m.price_per_mtok_out) for m in ds.models]
    assert prices == [(0.2, 0.2), (0.6, 0.6), (10.0, 30.0)]
    assert np.isnan(ds.cost_usd[1, :2]).all() and not np.isnan(ds.cost_usd[[0, 2]]).any()
    rows = [0, 2]
    assert (ds.cost_usd[rows, 2] > ds.cost_usd[rows, 1]).all() and (ds.cost_usd[rows, 1] > ds.cost_usd[rows, 0]).all()
    answer = ds.responses[0][2]
    assert ds.cost_usd[0, 2] == pytest.approx((estimate_tokens(ds.prompts[0]) * 10 + estimate_tokens(answer) * 30) / 1e6)


def test_responses_are_the_answers_of_the_judged_models():
    ds = load()
    assert ds.responses[0][2].startswith("The perpendicular has slope 2/3")  # model_answer/gpt-4-1106-preview.jsonl
    assert ds.responses[1][1].startswith("Use the :target selector")  # kept although its score is missing
    assert ds.responses[2][0].startswith("Bias means a person is not fair.")  # no answer record: the judge's quote


def test_price_comes_from_the_catalogue_first_then_the_importers_table():
    assert (arena_price("gpt-4-0314").price_per_mtok_in, arena_price("gpt-4-0314").price_per_mtok_out) == (30.0, 60.0)
    assert arena_price("claude-instant-1").price_per_mtok_out == 2.4 and "catalogue" in arena_price("claude-1").basis
    assert arena_price("claude-2.1").price_per_mtok_in == 8.0 and arena_price("openchat_3.5").price_per_mtok_in == 0.2


def test_a_price_file_overrides_the_built_in_prices(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({MIXTRAL: {"input_price": 0.24, "output_price": 0.24}}))
    ds = load(prices=str(prices))
    assert ds.models[1].price_per_mtok_in == 0.24


def test_a_directory_that_is_not_arena_bench_names_the_files_it_expected(tmp_path):
    with pytest.raises(DataFormatError, match=r"question\.jsonl, model_judgment/<model>\.jsonl.*found no question\.jsonl "
                                              r"and no model_judgment/\*\.jsonl"):
        load(tmp_path)
    (tmp_path / "question.jsonl").write_text("")
    with pytest.raises(DataFormatError, match=r"found no model_judgment/\*\.jsonl"):
        load(tmp_path)


def test_bad_judgments_name_file_and_row(tmp_path):
    directory = copy(tmp_path)
    judgments = directory / "model_judgment" / "gpt-4-turbo.jsonl"
    lines = judgments.read_text().splitlines()
    record = json.loads(lines[1])
    judgments.write_text("\n".join([lines[0], json.dumps({**record, "score": 11}), lines[2]]) + "\n")
    with pytest.raises(DataFormatError, match=r"gpt-4-turbo\.jsonl.*row 2.*'score' from 1 to 10"):
        load(directory)
    judgments.write_text("\n".join([lines[0], json.dumps({**record, "question_id": "nowhere"}), lines[2]]) + "\n")
    with pytest.raises(DataFormatError, match=r"row 2.*a question_id listed in question\.jsonl"):
        load(directory)


@pytest.mark.slow
def test_real_arena_bench_v1_matches_its_published_mean_scores():
    root = shared_data_dir() / "arena_bench_v1"
    if not root.is_dir():
        pytest.skip(f"real data {root} not found: set CROSSROADS_DATA to the shared data directory (default ../shared/data)")
    ds = load(root)
    assert ds.n_queries == 300 and ds.n_models == 14
    assert "vicuna-7b-v1.5" not in ds.model_names and GPT4 in ds.model_names
    for model, mean_score in ((GPT4, 8.87), (MIXTRAL, 6.54), (MISTRAL, 3.57)):
        assert np.nanmean(ds.quality[:, ds.model_index(model)]) == pytest.approx((mean_score - 1) / 9, abs=0.01), model
    missing = np.isnan(ds.quality)
    assert 0 < missing.sum() < 0.02 * missing.size
    assert all(m.price_per_mtok_in is not None for m in ds.models) and all(ds.cost_estimated)
    assert np.array_equal(np.isnan(ds.cost_usd), missing)
    assert all(text is not None for row in ds.responses for text in row)  # one answer of Mixtral is empty
