"""How fast the paths every command walks are: reading the big datasets, and deciding on a full-size pool.

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/bench_hot_paths.py

These figures used to be wall-clock asserts in unit tests, which fail on a busy machine.
Each is measured as a ratio against a baseline run in the same process, interleaved:

(a) ``load_dataset`` of RouteLLM MMLU (57 CSV files, 14k queries) against reading the same
    files with ``csv.DictReader`` alone; of MMLU-Pro (29 zipped JSON files, 12k queries)
    against ``json.loads`` of the same members.  Old test limits: 10 s and 45 s.
(b) ``decide`` on 15,000 queries x 29 models (MaxUtility with a cost cap and an allowed
    mask, and CheapestWithin) against a bare numpy argmax of ``quality - wtp x cost`` on
    the same arrays.  Old test limit: 1 s for both rules.

(The disk cache's speed is in ``bench_embeddings.py``.)  Each timing is the best of
``--repeats`` runs.  Writes ``benchmarks/results/hot_paths.json`` and ``hot_paths.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _shared import Table, cell, machine, missing_data, skip_message, write_results
from bench_embeddings import best_time_s

from crossroads.data.importers import load_dataset
from crossroads.objective.rules import CheapestWithin, MaxUtility, decide
from crossroads.paths import shared_data_dir


def read_csvs(directory: Path) -> int:
    rows = 0
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            rows += sum(1 for _ in csv.DictReader(handle))
    return rows


def read_zips(directory: Path) -> int:
    records = 0
    for path in sorted(directory.glob("*.zip")):
        with zipfile.ZipFile(path) as bundle:
            for member in bundle.namelist():
                if member.endswith(".json"):
                    records += len(json.loads(bundle.read(member)))
    return records


def loading(repeats: int) -> dict:
    mmlu, pro = shared_data_dir() / "routellm" / "mmlu", shared_data_dir() / "mmlu_pro" / "eval_results"
    cases = {  # name: (spec, the raw read it is compared with, the old unit test's limit in seconds)
        "routellm-mmlu": (f"routellm-mmlu:{mmlu}", lambda: read_csvs(mmlu / "responses"), 10.0),
        "mmlu-pro": (f"mmlu-pro:{pro}", lambda: read_zips(pro), 45.0),
    }
    out = {}
    for name, (spec, baseline, old_limit_s) in cases.items():
        load_s = best_time_s(lambda spec=spec: load_dataset(spec), repeats)
        raw_s = best_time_s(baseline, repeats)
        out[name] = {"load_s": load_s, "raw_read_s": raw_s, "ratio": load_s / raw_s, "old_test_limit_s": old_limit_s}
    return out


def deciding(repeats: int) -> dict:
    rng = np.random.default_rng(0)
    n, m = 15_000, 29
    quality, cost = rng.random((n, m)), rng.random((n, m)) * 1e-3
    allowed = rng.random(m) < 0.8

    def bare() -> np.ndarray:
        return np.argmax(quality - 200.0 * cost, axis=1)

    def both_rules() -> None:
        decide(quality, cost, MaxUtility(200.0), allowed=allowed, max_cost_usd=5e-4).chosen
        decide(quality, cost, CheapestWithin(0.05)).chosen

    rules_s, bare_s = best_time_s(both_rules, repeats), best_time_s(bare, repeats)
    ranking_s = best_time_s(lambda: decide(quality, cost, MaxUtility(200.0)).ranking, repeats)
    return {"queries": n, "models": m, "both_rules_s": rules_s, "bare_argmax_s": bare_s,
            "ratio": rules_s / bare_s, "full_ranking_s": ranking_s, "old_test_limit_s": 1.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    missing = missing_data([shared_data_dir() / "routellm" / "mmlu", shared_data_dir() / "mmlu_pro" / "eval_results"])
    if missing:
        print(skip_message(missing))
        return 0
    results = {"machine": machine(), "loading": loading(args.repeats), "deciding": deciding(args.repeats)}
    results["machine"]["load_average_end"] = machine()["load_average"]
    load = Table("Reading the big datasets (best of repeats)",
                 ["dataset", "load_dataset s", "raw read s", "ratio", "old test limit s", "within"])
    for name, row in results["loading"].items():
        load.add(name, cell(row["load_s"], digits=2), cell(row["raw_read_s"], digits=2), cell(row["ratio"], digits=1),
                 cell(row["old_test_limit_s"], digits=0), "yes" if row["load_s"] <= row["old_test_limit_s"] else "NO")
    d = results["deciding"]
    rules = Table(f"decide() on {d['queries']:,} queries x {d['models']} models (best of repeats)",
                  ["measure", "seconds", "ratio to bare argmax"])
    rules.add("MaxUtility (cap, mask) + CheapestWithin", cell(d["both_rules_s"], digits=4), cell(d["ratio"], digits=1))
    rules.add("bare numpy argmax", cell(d["bare_argmax_s"], digits=4), "1.0")
    rules.add("MaxUtility full ranking", cell(d["full_ranking_s"], digits=4),
              cell(d["full_ranking_s"] / d["bare_argmax_s"], digits=1))
    rules.notes.append(f"old unit-test limit for both rules: {d['old_test_limit_s']:g} s "
                       f"({'within' if d['both_rules_s'] <= d['old_test_limit_s'] else 'OVER'})")
    for table in (load, rules):
        table.print()
    json_path, md_path = write_results("hot_paths", results, "Hot paths",
                                       ["`python benchmarks/bench_hot_paths.py`; machine: "
                                        f"{results['machine']['cores']} cores, load {results['machine']['load_average']}"],
                                       [load, rules])
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
