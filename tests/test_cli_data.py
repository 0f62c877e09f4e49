"""The ``crossroads data`` command: convert and info."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

from crossroads.cli import data
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.data.importers import load_datasets
from crossroads.data.jsonl import read_jsonl
from crossroads.errors import CrossroadsError

FIXTURES = Path(__file__).parent / "fixtures"
ROUTERBENCH = f"routerbench:{FIXTURES / 'routerbench'}"
MMLU = f"routellm-mmlu:{FIXTURES / 'routellm/mmlu'}"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="crossroads")
    data.register(root.add_subparsers(dest="command", required=True))
    return root


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return args.func(args)


@pytest.mark.parametrize("argv", [["data", "--help"], ["data", "info", "--help"], ["data", "convert", "--help"]])
def test_help_describes_commands_and_formats(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "FORMAT:PATH" in out and "routellm-mtbench" in out and "mmlu-pro" in out


def test_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["data"])
    assert exit_.value.code == 2


def test_info_prints_a_table_per_model(capsys):
    assert run("data", "info", "--dataset", ROUTERBENCH) == 0
    out = capsys.readouterr().out
    assert "5 queries x 3 models, 3 categories" in out
    assert "gpt-4-1106-preview" in out and "recorded" in out
    assert "20.00%" in out  # each model's quality is missing on 1 of the 5 queries
    assert "10/30" in out
    assert re.search(r"routerbench\s*│\s*3\s*│\s*5\b", out)  # format, files, queries


def test_info_combines_datasets_and_shows_estimated_costs(capsys):
    assert run("data", "info", "-d", ROUTERBENCH, "-d", MMLU) == 0
    out = capsys.readouterr().out
    assert "10 queries x 4 models" in out and "estimated" in out and "10/30" in out


def test_info_json_holds_every_model(capsys):
    assert run("data", "info", "-d", ROUTERBENCH, "-d", MMLU, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    expected = load_datasets([ROUTERBENCH, MMLU])
    assert summary["queries"] == 10 and summary["categories"] == len(set(expected.categories))
    models = {row["name"]: row for row in summary["models"]}
    assert list(models) == expected.model_names
    for j, name in enumerate(expected.model_names):
        row = models[name]
        assert row["mean_quality"] == pytest.approx(np.nanmean(expected.quality[:, j]))
        assert row["mean_cost_usd"] == pytest.approx(np.nanmean(expected.cost_usd[:, j]))
        assert row["missing_share"] == pytest.approx(np.isnan(expected.quality[:, j]).mean())
        assert row["cost_estimated"] is bool(expected.cost_estimated[j])
    assert {source["format"] for source in summary["sources"]} == {"routerbench", "routellm-mmlu"}


@pytest.mark.parametrize("columns", ["80", "60", "200"])
def test_info_never_wraps_or_cuts_model_names(columns, tmp_path, capsys, monkeypatch):
    from crossroads.data.jsonl import write_jsonl

    long_names = ["cognitivecomputations/dolphin-2.9-llama3-8b", "itpossible/Chinese-Mistral-7B-v0.1"]
    dataset = load_datasets([ROUTERBENCH])
    dataset = RoutingDataset(dataset.query_ids, dataset.prompts, dataset.categories, dataset.sources,
                             [ModelInfo(name, 0.2, 0.2) for name in [*long_names, "short"]],
                             dataset.quality, dataset.cost_usd)
    path = write_jsonl(dataset, tmp_path / "long.jsonl")
    monkeypatch.setenv("COLUMNS", columns)
    assert run("data", "info", "--dataset", f"crossroads:{path}") == 0
    out = capsys.readouterr().out
    for name in long_names:
        assert re.search(rf"^\W*{re.escape(name)}\s", out, re.MULTILINE), name
    assert "…" not in out


def test_convert_writes_jsonl(tmp_path, capsys):
    out_file = tmp_path / "sub" / "both.jsonl"
    assert run("data", "convert", "--dataset", ROUTERBENCH, "--dataset", MMLU, "--out", str(out_file)) == 0
    assert "Wrote 10 queries x 4 models" in capsys.readouterr().out
    written = read_jsonl(out_file)
    expected = load_datasets([ROUTERBENCH, MMLU])
    assert written.query_ids == expected.query_ids and written.model_names == expected.model_names


def test_errors_are_crossroads_errors_not_tracebacks(tmp_path):
    with pytest.raises(CrossroadsError, match="unknown dataset format"):
        run("data", "info", "--dataset", "nope:x")
    with pytest.raises(CrossroadsError, match="no such file"):
        run("data", "convert", "--dataset", f"routerbench:{tmp_path / 'missing'}", "--out", str(tmp_path / "x.jsonl"))


def test_main_program_reports_errors_with_exit_code_2(capsys):
    try:
        from crossroads.cli.main import main

        main(["data", "--help"])
    except SystemExit:
        pass
    except ModuleNotFoundError as exc:  # the other commands of cli/main.py are not written yet
        pytest.skip(f"crossroads.cli.main cannot be built yet: {exc}")
    capsys.readouterr()
    assert main(["data", "info", "--dataset", "nope:x"]) == 2
    assert "unknown dataset format 'nope'" in capsys.readouterr().err
