"""The ``crossroads data`` command: convert and info."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from crossroads.cli import data
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
