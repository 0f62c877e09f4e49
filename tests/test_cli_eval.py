"""The command line end to end: eval, train and calibrate on small real data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from crossroads.cli.main import main
from crossroads.routers import load_router

FIXTURES = Path(__file__).parent / "fixtures"
MMLU_FIXTURE = f"routellm-mmlu:{FIXTURES / 'routellm' / 'mmlu'}"


def test_eval_writes_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["eval", "--dataset", MMLU_FIXTURE, "--router", "knn:k=5", "--router", "ridge", "--cv", "3",
                 "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    entries = metrics["entries"]
    assert {"knn:k=5", "ridge", "random", "oracle", "gpt-4-1106-preview",
            "mistralai/mixtral-8x7b-instruct-v0.1"} <= set(entries)
    assert metrics["pair"]["strong"] == "gpt-4-1106-preview"
    for key in ("apgr", "cpt50", "cpt80", "apgr_fine", "aiq", "best_quality", "cost_share_at_95"):
        assert key in entries["ridge"]
    assert entries["oracle"]["apgr"] >= entries["ridge"]["apgr"]
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "APGR" in printed and "ridge" in printed and "oracle" in printed


def test_eval_curve_has_its_legend_outside_and_plain_cost_ticks(tmp_path, monkeypatch):
    from crossroads.evaluate import plots

    saved = []

    def keep(fig, path, dpi=120):
        fig.canvas.draw()
        saved.append(fig)
        return save(fig, path, dpi)

    save = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", keep)
    assert main(["eval", "--dataset", MMLU_FIXTURE, "--router", "knn:k=5", "--router", "ridge", "--cv", "3",
                 "--out", str(tmp_path)]) == 0
    (fig,) = saved
    cost = fig.axes[-1]
    legend = cost.get_legend().get_window_extent()
    assert not any(legend.overlaps(ax.get_window_extent()) for ax in fig.axes)
    labels = [label.get_text() for label in cost.xaxis.get_ticklabels() if label.get_text()]
    assert labels and all(re.fullmatch(r"[0-9.]+", label) for label in labels), labels
    routers = [line for line in cost.get_lines() if line.get_label() in ("knn:k=5", "ridge")]
    assert len({(line.get_color(), line.get_linestyle()) for line in routers}) == 2
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_on_real_gsm8k_subset_beats_random(tmp_path, real_data):
    """A router trained on real GSM8K outcomes ranks queries better than chance."""
    from crossroads.data.importers import load_dataset
    from crossroads.data.jsonl import write_jsonl

    gsm8k = load_dataset(f"routellm-gsm8k:{real_data / 'routellm' / 'gsm8k'}")
    subset = write_jsonl(gsm8k.subset(np.arange(600)), tmp_path / "gsm8k-600.jsonl")
    out = tmp_path / "run"
    assert main(["eval", "--dataset", f"crossroads:{subset}", "--router", "ridge", "--out", str(out)]) == 0
    entries = json.loads((out / "metrics.json").read_text())["entries"]
    assert entries["ridge"]["apgr"] > entries["random"]["apgr"] + 0.05


def test_train_then_calibrate_gives_the_target_share(tmp_path, capsys):
    router_file = tmp_path / "ridge.npz"
    assert main(["train", "--dataset", MMLU_FIXTURE, "--router", "ridge:alpha=3", "--out", str(router_file)]) == 0
    router = load_router(router_file)
    assert router.name == "ridge" and router.alpha == 3 and router.embedder_.startswith("all-MiniLM-L6-v2")
    capsys.readouterr()
    assert main(["calibrate", "--dataset", MMLU_FIXTURE, "--router-file", str(router_file),
                 "--strong-share", "0.5"]) == 0
    printed = capsys.readouterr().out
    threshold = float(re.search(r"router-ridge-([0-9.]+)", printed).group(1))
    achieved = float(re.search(r"achieved ([0-9.]+)%", printed).group(1))
    queries = int(re.search(r"(\d+) calibration queries", printed).group(1))
    assert 0.0 <= threshold <= 1.0
    assert abs(achieved - 50.0) <= 100 / queries  # within one query of the target on untied scores


def test_calibrate_cross_validates_a_router(capsys):
    assert main(["calibrate", "--dataset", MMLU_FIXTURE, "--router", "ridge", "--strong-share", "0.3",
                 "--cv", "3"]) == 0
    assert re.search(r"router-ridge-[0-9.]+", capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["eval", "--dataset", MMLU_FIXTURE, "--router", "bert-huge"], "unknown router 'bert-huge'"),
    (["eval", "--train", MMLU_FIXTURE], "--train and --test go together"),
    (["eval", "--dataset", "nosuchformat:x"], "unknown dataset format"),
    (["eval", "--dataset", MMLU_FIXTURE, "--strong", "gpt-9", "--weak", "gpt-4-1106-preview"], "unknown model 'gpt-9'"),
    (["calibrate", "--dataset", MMLU_FIXTURE, "--router", "knn", "--strong-share", "1.5"], "fraction in \\[0, 1\\]"),
    (["calibrate", "--dataset", MMLU_FIXTURE, "--router-file", "/nonexistent.npz", "--strong-share", "0.5"],
     "no such router file"),
])
def test_bad_input_gets_a_clear_error(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "eval" else [])) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize("command", [["data", "info"], ["data", "convert"], ["train"], ["eval"], ["calibrate"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "--dataset" in capsys.readouterr().out
