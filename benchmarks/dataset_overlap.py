"""How many questions of one shared dataset recur in another, by normalised question text.

Run from the repository root::

    python benchmarks/dataset_overlap.py       # about 20 s

These are the training queries ``crossroads eval --train A --test B`` removes (see
``crossroads.data.dedup``).  Writes ``benchmarks/results/dataset_overlap.{json,md}``.
"""

from __future__ import annotations

import json
from itertools import permutations

from _shared import RESULTS_DIR, missing_data, skip_message

from crossroads.data.dedup import overlap
from crossroads.data.importers import load_dataset
from crossroads.paths import shared_data_dir

SETS = {
    "RouteLLM MMLU": "routellm-mmlu:routellm/mmlu",
    "RouterDC MMLU": "routerdc:routerdc7/mmlu_train.json",
    "MMLU-Pro": "mmlu-pro:mmlu_pro/eval_results",
    "RouteLLM GSM8K": "routellm-gsm8k:routellm/gsm8k",
    "RouterDC GSM8K": "routerdc:routerdc7/gsm8k-train.json",
}


def main() -> None:
    root = shared_data_dir()
    missing = missing_data([root / spec.split(":", 1)[1] for spec in SETS.values()])
    if missing:
        print(skip_message(missing))
        return
    data = {name: load_dataset(f"{spec.split(':', 1)[0]}:{root / spec.split(':', 1)[1]}") for name, spec in SETS.items()}
    rows = []
    for train, test in permutations(data, 2):
        repeated = int(overlap(data[train].prompts, data[test].prompts).sum())
        if repeated:
            rows.append({"train": train, "test": test, "train_queries": data[train].n_queries, "removed": repeated})
    lines = ["# Questions shared between datasets (`python benchmarks/dataset_overlap.py`)", "",
             "Training queries whose normalised question also appears in the test set; "
             "pairs with no overlap are left out.", "",
             "| train on | test on | training queries | removed | share |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['train']} | {r['test']} | {r['train_queries']} | {r['removed']} | "
              f"{100 * r['removed'] / r['train_queries']:.1f}% |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "dataset_overlap.md").write_text(text)
    (RESULTS_DIR / "dataset_overlap.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
