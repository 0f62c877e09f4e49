"""crossroads' JSONL format: exact round trips and clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.importers import load_dataset
from crossroads.data.jsonl import read_jsonl, write_jsonl
from crossroads.errors import DataFormatError
from crossroads.paths import shared_data_dir

FIXTURES = Path(__file__).parent / "fixtures"
IMPORTER_FIXTURES = [
    "routellm-mmlu:routellm/mmlu",
    "routellm-gsm8k:routellm/gsm8k",
    "routellm-mtbench:routellm/mt_bench",
    "routerbench:routerbench",
    "mmlu-pro:mmlu_pro",
    "llmrouter:llmrouter/dcrouter_train.json",
    "routerdc:routerdc",
    "arena-bench:arena_bench",
    "crossroads:crossroads/small.jsonl",
]


def assert_same(a: RoutingDataset, b: RoutingDataset) -> None:
    """Every field equal, NaN where NaN, None where None."""
    assert a.query_ids == b.query_ids
    assert a.prompts == b.prompts
    assert a.full_prompts == b.full_prompts
    assert a.categories == b.categories
    assert a.sources == b.sources
    assert a.models == b.models
    assert a.cost_estimated == b.cost_estimated
    for name in ("quality", "cost_usd", "latency_s"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.shape == y.shape and np.array_equal(x, y, equal_nan=True), name
    assert a.responses == b.responses


def spec_of(entry: str) -> str:
    name, path = entry.split(":", 1)
    return f"{name}:{FIXTURES / path}"


@pytest.mark.parametrize("entry", IMPORTER_FIXTURES, ids=[e.split(":")[0] for e in IMPORTER_FIXTURES])
def test_every_importer_round_trips(entry, tmp_path):
    dataset = load_dataset(spec_of(entry))
    path = write_jsonl(dataset, tmp_path / "out" / "data.jsonl")
    assert_same(dataset, read_jsonl(path))
    # and the file is read back through the 'crossroads' format too
    assert_same(dataset, load_dataset(f"crossroads:{path}"))


def test_hand_written_file():
    ds = read_jsonl(FIXTURES / "crossroads/small.jsonl")
    assert ds.model_names == ["big-model", "small-model"]
    assert ds.models[0] == ModelInfo("big-model", 10.0, 30.0, "a large hosted model")
    assert ds.cost_estimated == [True, False]
    assert ds.latency_s[0].tolist() == [1.5, 0.2]
    assert np.isnan(ds.latency_s[1]).all() and np.isnan(ds.quality[2, 1]) and np.isnan(ds.cost_usd[2, 1])
    assert ds.full_prompts == ["Question: What is 1 + 1?\nAnswer: 2\n\nQuestion: What is 2 + 2?\nAnswer:", None, None]
    assert ds.responses[1] == [None, "Sydney"]


def test_edge_values_round_trip(tmp_path):
    dataset = RoutingDataset(
        query_ids=["a", "b", "c"],
        prompts=["línea 1\nline 2 \"quoted\"", "😀 emoji\ttab", ""],
        categories=["x", "", "y"],
        sources=["s", "s", "t"],
        models=[ModelInfo("m/one", None, None, ""), ModelInfo("m two", 0.1 + 0.2, 1e-9, "d")],
        quality=[[0.1 + 0.2, math.nan], [0.0, 1.0], [math.nan, math.nan]],
        cost_usd=[[1e-300, 5.0], [math.nan, 0.0], [3.3e-7, math.nan]],
        latency_s=[[math.nan, math.nan], [math.nan, math.nan], [math.nan, math.nan]],
        responses=[[None, None], [None, None], [None, None]],
        full_prompts=[None, None, None],
        cost_estimated=[False, True],
    )
    path = write_jsonl(dataset, tmp_path / "edge.jsonl")
    back = read_jsonl(path)
    assert_same(dataset, back)
    # quality missing but cost recorded: the outcome holds only the cost
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines[3]["outcomes"] == {"m/one": {"cost_usd": 3.3e-7}}
    assert lines[1]["outcomes"] == {"m/one": {"quality": 0.30000000000000004, "cost_usd": 1e-300}, "m two": {"cost_usd": 5.0}}
    assert "NaN" not in path.read_text(encoding="utf-8")


def test_dataset_without_optional_fields_round_trips(tmp_path):
    dataset = RoutingDataset(["q"], ["p"], ["c"], ["s"], [ModelInfo("m")], [[0.5]], [[0.001]])
    back = read_jsonl(write_jsonl(dataset, tmp_path / "x.jsonl"))
    assert_same(dataset, back)
    assert back.latency_s is None and back.responses is None and back.full_prompts is None


def test_real_routerbench_round_trips(tmp_path):
    root = shared_data_dir() / "routerbench"
    if not root.exists():
        pytest.skip(f"real data {root} not found: set CROSSROADS_DATA (default ../shared/data)")
    dataset = load_dataset(f"routerbench:{root}")
    assert_same(dataset, read_jsonl(write_jsonl(dataset, tmp_path / "routerbench.jsonl")))


HEADER = {"crossroads": "routing-dataset", "version": 1, "models": [{"name": "m"}]}


def write_lines(path: Path, *records: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "records, message",
    [
        ([{"format": "other"}], r"row 1: expected a header line"),
        ([{**HEADER, "version": 2}], r"row 1: expected format version 1, found 2"),
        ([HEADER, {"id": "a", "prompt": "p", "outcomes": {"x": {"quality": 1}}}], r"row 2: expected outcomes of models listed in the header \(m\), found 'x'"),
        ([HEADER, {"id": "a", "prompt": "p", "outcomes": {"m": {"quality": 2}}}], r"row 2: expected quality of 'm' as a number in \[0, 1\], found 2"),
        ([HEADER, {"id": "a", "prompt": "p", "outcomes": {"m": {"quality": "high"}}}], r"row 2: expected quality of 'm' as a number in \[0, 1\], found 'high'"),
        ([HEADER, {"id": "a", "prompt": "p", "outcomes": {"m": {"cost_usd": -1}}}], r"row 2: expected cost_usd of 'm' as a non-negative number"),
        ([HEADER, '{"id": "a", "prompt": '], r"row 2: expected one JSON object per line"),
        ([HEADER, {"id": "a", "prompt": "p"}, {"id": "a", "prompt": "q"}], r"row 3: expected a unique 'id', found 'a' again"),
        ([HEADER, {"prompt": "p"}], r"row 2: expected 'id' as a string, found nothing"),
        ([{**HEADER, "n_queries": 3}, {"id": "a", "prompt": "p"}], r"expected 3 queries as the header says, found 1 \(is the file truncated\?\)"),
    ],
)
def test_corrupt_files_name_file_and_row(tmp_path, records, message):
    path = write_lines(tmp_path / "bad.jsonl", *records)
    with pytest.raises(DataFormatError, match=message) as error:
        read_jsonl(path)
    assert str(path) in str(error.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataFormatError, match="row 1: expected a header line .* found an empty file"):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(DataFormatError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl")
