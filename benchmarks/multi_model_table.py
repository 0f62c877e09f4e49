"""Routers over pools of many models (RouterBench, MMLU-Pro, LLMRouter, RouterDC): quality against cost.

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/multi_model_table.py
    python benchmarks/multi_model_table.py --datasets routerbench --mmlu-pro-queries 0

Each router is scored by 5-fold cross-validation (seed 0).  A router picks, per
query, the model maximising predicted quality - willingness to pay x expected cost;
sweeping the willingness to pay gives its cost/quality curve.  Reported per router:
AIQ (RouterBench's area under the non-decreasing hull, between the cheapest and the
dearest single model's cost), the best quality on the curve, and cost_share_at_95/97/100:
the cheapest mean cost reaching 95/97/100% of the best single model's quality, as a
share of that model's cost.  Baselines: random (10 seeds), every single model, the oracle.

Only queries with an outcome for every model are used (``complete_rows``).  MMLU-Pro
is subsampled (seeded) to keep the slower routers within the time budget.  A router
whose 5 folds would take longer than ``--budget-s`` on a dataset is dropped there, and
the table says so.

Writes ``benchmarks/results/multi_model_table.json``, ``multi_model_table.md`` and one
curve PNG per dataset.  Exits 0 even when the target fails; the check line says FAIL.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _shared import (
    RESULTS_DIR,
    Table,
    cell,
    evaluate_each,
    load_embedded,
    machine,
    missing_data,
    skip_message,
    write_results,
)

from crossroads.paths import shared_data_dir

ROUTERS = ["knn", "mlp", "ridge", "ensemble", "mf", "sw_ranking"]
SEED = 0
SUBSAMPLE_SEED = 0
BUDGET_S = 180.0
MMLU_PRO_QUERIES = 4000

#: key -> (title, format, folder under the shared data, what to know about it)
DATASETS = {
    "routerbench": ("RouterBench", "routerbench", "routerbench",
                    "ARC-Challenge, MBPP and Winogrande together, 11 models, real recorded costs."),
    "mmlu_pro": ("MMLU-Pro", "mmlu-pro", "mmlu_pro/eval_results",
                 "29 models; no prices published, so costs are estimated from a price table and answer lengths."),
    "llmrouter": ("LLMRouter", "llmrouter", "llmrouter/dcrouter_train.json",
                  ("9 models; prices from LLMRouter's default_llm.json, costs estimated from prompt tokens and an "
                  "assumed answer length.")),
    "routerdc": ("RouterDC", "routerdc", "routerdc7",
                 ("7 open 7-8B models, no prices: every model gets the same estimated cost per query, so the "
                 "cost axis is flat (AIQ undefined; a cost share is 100% when the router's top pick reaches the "
                 "target quality, '-' otherwise).")),
}
#: RouterBench: >= 97% of the best single model's quality at <= 30% of its cost.
TARGET = {"dataset": "routerbench", "metric": "cost_share_at_97", "max": 0.30}
#: The target metric is read where a flat curve crosses 97%, so it moves with the folds: rerun with these seeds.
TARGET_EXTRA_SEEDS = (1, 2)
COLUMNS = [("aiq", "AIQ", False), ("best_quality", "best quality", False), ("cost_share_at_95", "cost@95%", True),
           ("cost_share_at_97", "cost@97%", True), ("cost_share_at_100", "cost@100%", True)]


def rows_for(key: str, mmlu_pro_queries: int):
    """The query selection for dataset ``key``: complete rows, and for MMLU-Pro a seeded subsample."""

    def select(dataset):
        complete = dataset.complete_rows()
        selection["queries_published"], selection["queries_complete"] = dataset.n_queries, complete.n_queries
        if key == "mmlu_pro" and 0 < mmlu_pro_queries < complete.n_queries:
            picked = np.sort(np.random.default_rng(SUBSAMPLE_SEED).choice(complete.n_queries, mmlu_pro_queries,
                                                                          replace=False))
            selection["subsample"] = {"queries": mmlu_pro_queries, "seed": SUBSAMPLE_SEED,
                                      "how": "numpy default_rng(seed).choice over the complete rows, no replacement"}
            return complete.subset(picked)
        return complete

    selection: dict = {}
    return select, selection


def single_model_cost_shares(entry, best) -> dict:
    """A single model's cost shares: its cost over the best model's, where its quality reaches the fraction."""
    from crossroads.evaluate.metrics import COST_SHARE_FRACTIONS

    q, c = entry.metrics["mean_quality"], entry.metrics["mean_cost_usd"]
    bq, bc = best.metrics["mean_quality"], best.metrics["mean_cost_usd"]
    return {key: (c / bc if bc > 0 and q >= fraction * bq - 1e-12 else float("nan"))
            for key, fraction in COST_SHARE_FRACTIONS.items()}


def run_dataset(key: str, routers: list[str], budget_s: float, mmlu_pro_queries: int, out_dir: Path):
    from crossroads.evaluate.plots import plot_evaluation

    title, fmt, folder, about = DATASETS[key]
    spec = f"{fmt}:{shared_data_dir() / folder}"
    print(f"\n== {title} ({spec})")
    started = time.perf_counter()
    select, selection = rows_for(key, mmlu_pro_queries)
    dataset, embeddings, embedder = load_embedded(spec, rows=select)
    print(f"{dataset.n_queries} queries x {dataset.n_models} models")
    evaluation, seconds, skipped = evaluate_each(list(routers), dataset, embeddings,
                                                 seed=SEED, pair=None, embedder=embedder, budget_s=budget_s)
    png = plot_evaluation(evaluation, out_dir / f"multi_model_{key}.png",
                          title=f"{title}: {dataset.n_queries} queries, {dataset.n_models} models, 5-fold CV")

    models = sorted((e for e in evaluation.entries if e.kind == "model"), key=lambda e: -e.metrics["mean_quality"])
    best = min(models, key=lambda e: (-e.metrics["mean_quality"], e.metrics["mean_cost_usd"]))
    for entry in models:
        entry.metrics.update(single_model_cost_shares(entry, best))
    caption = (f"{title}: {dataset.n_queries} queries x {dataset.n_models} models, 5-fold CV (seed {SEED}); "
               f"cost shares are of the best single model, {best.name}")
    table = Table(caption, ["name", "kind", *(h for _, h, _ in COLUMNS), "mean cost (US$/query)", "CV time (s)"])
    for entry in evaluation.entries:
        if entry.kind != "model":
            table.add(entry.name, entry.kind, *(cell(entry.metrics.get(k), pct) for k, _, pct in COLUMNS),
                      cell(entry.metrics.get("mean_cost_usd"), digits=6), cell(seconds.get(entry.name), digits=0))
    for label, reason in skipped.items():
        table.add(label, "router, dropped", "-", "-", "-", "-", "-", "-", reason)
    for entry in models:
        table.add(entry.name, "single model", "-", cell(entry.metrics["mean_quality"]),
                  *(cell(entry.metrics[k], True) for k, _, pct in COLUMNS[2:]),
                  cell(entry.metrics["mean_cost_usd"], digits=6), "-")
    table.notes.append(about)
    dropped = selection["queries_published"] - selection["queries_complete"]
    rows_note = (f"{selection['queries_complete']} of {selection['queries_published']} queries have an outcome for "
                 f"every model ({dropped} dropped)")
    if "subsample" in selection:
        rows_note += (f"; a seeded subsample of {selection['subsample']['queries']} of them (seed {SUBSAMPLE_SEED}) "
                      f"is used so that every router fits the time budget")
    table.notes.append(rows_note + ".")
    if skipped:
        table.notes.append(f"Dropped (5 folds projected over {budget_s:.0f} s): " + ", ".join(skipped) + ".")
    table.notes.append("Router rows: AIQ and best quality of the cross-validated cost/quality curve; single-model "
                       "rows: the model's mean quality, and its cost share where its quality reaches the fraction.")

    tables = [table]
    spread = None
    if key == TARGET["dataset"] and TARGET_EXTRA_SEEDS and seconds:
        spread = target_spread(evaluation, dataset, embeddings, embedder, list(seconds))
        tables.append(spread_table(title, spread))

    result = {
        "dataset": spec,
        "about": about,
        "queries": dataset.n_queries,
        "models": dataset.model_names,
        "selection": selection,
        "best_single_model": {"name": best.name, **best.metrics},
        "setup": evaluation.setup,
        "entries": {e.name: {"kind": e.kind, **e.metrics} for e in evaluation.entries},
        "cv_seconds": seconds,
        "dropped_routers": skipped,
        "target_metric_over_fold_seeds": spread,
        "curve_png": str(png),
        "run_seconds": time.perf_counter() - started,
    }
    return result, tables


def target_spread(evaluation, dataset, embeddings, embedder: str, labels: list[str]) -> dict:
    """The target metric of each router that ran, with fold seed 0 and the extra seeds."""
    from crossroads.evaluate.harness import evaluate

    per_seed = {SEED: {e.name: e.metrics[TARGET["metric"]] for e in evaluation.entries if e.kind == "router"}}
    for seed in TARGET_EXTRA_SEEDS:
        print(f"  {TARGET['metric']} with fold seed {seed}")
        run = evaluate(list(labels), dataset, embeddings, folds=5, seed=seed,
                       embedder=embedder)
        per_seed[seed] = {e.name: e.metrics[TARGET["metric"]] for e in run.entries if e.kind == "router"}
    summary = {}
    for label in labels:
        values = np.array([per_seed[s][label] for s in per_seed], dtype=float)
        summary[label] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else float("nan"),
                          "min": float(np.nanmin(values)) if np.isfinite(values).any() else float("nan"),
                          "max": float(np.nanmax(values)) if np.isfinite(values).any() else float("nan"),
                          "seeds_reaching_target": int((values <= TARGET["max"]).sum())}
    return {"metric": TARGET["metric"], "seeds": list(per_seed), "per_seed": per_seed, "summary": summary}


def spread_table(title: str, spread: dict) -> Table:
    seeds = spread["seeds"]
    table = Table(f"{title}: {spread['metric']} by fold seed (target <= {100 * TARGET['max']:.0f}%)",
                  ["router", *(f"seed {s}" for s in seeds), "mean", "min - max"])
    for label, summary in spread["summary"].items():
        table.add(label, *(cell(spread["per_seed"][s][label], True) for s in seeds), cell(summary["mean"], True),
                  f"{cell(summary['min'], True)} - {cell(summary['max'], True)}")
    table.notes.append("The cost share is read where the router's curve, nearly flat near the top, crosses 97% of "
                       "the best model's quality, so small changes in the folds move it by several points.")
    return table


def target_check(result: dict) -> dict:
    routers = {name: e for name, e in result["entries"].items() if e["kind"] == "router"}
    values = {name: e.get(TARGET["metric"]) for name, e in routers.items()}
    reached = {name: v for name, v in values.items() if v is not None and np.isfinite(v)}
    best = min(reached, key=reached.get) if reached else None
    value = reached.get(best) if best else float("nan")
    return {**TARGET, "router": best, "value": value, "per_router": values,
            "pass": bool(best is not None and value <= TARGET["max"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated subset of {', '.join(DATASETS)}")
    parser.add_argument("--routers", default=",".join(ROUTERS), help="comma-separated router specs")
    parser.add_argument("--mmlu-pro-queries", type=int, default=MMLU_PRO_QUERIES,
                        help=f"seeded subsample of MMLU-Pro's complete rows (default {MMLU_PRO_QUERIES}; 0 = all)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="drop a router whose 5 folds on a dataset would take longer (default 180)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    keys = [k.strip() for k in args.datasets.split(",") if k.strip()]
    unknown = [k for k in keys if k not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {', '.join(unknown)}; choose from {', '.join(DATASETS)}")
    missing = missing_data([shared_data_dir() / DATASETS[k][2] for k in keys])
    if missing:
        print(skip_message(missing))
        return 0
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    started, at_start = time.perf_counter(), machine()
    results: dict = {"script": "benchmarks/multi_model_table.py", "machine_at_start": at_start, "folds": 5,
                     "seed": SEED, "routers": routers, "budget_s": args.budget_s, "target": TARGET, "datasets": {}}
    tables = []
    for key in keys:
        result, dataset_tables = run_dataset(key, routers, args.budget_s, args.mmlu_pro_queries, args.out_dir)
        results["datasets"][key] = result
        for table in dataset_tables:
            table.print()
        tables += dataset_tables
    results["machine_at_end"] = machine()
    results["run_seconds"] = time.perf_counter() - started

    intro = []
    if TARGET["dataset"] in results["datasets"]:
        check = results["target_check"] = target_check(results["datasets"][TARGET["dataset"]])
        knn = check["per_router"].get("knn")
        spread = results["datasets"][TARGET["dataset"]]["target_metric_over_fold_seeds"]
        best_spread = spread["summary"].get(check["router"]) if spread and check["router"] else None
        line = (f"{'PASS' if check['pass'] else 'FAIL'}  RouterBench: >= 97% of the best single model's quality at "
                f"<= {100 * TARGET['max']:.0f}% of its cost: best router "
                + (f"{check['router']} needs {100 * check['value']:.1f}%" if check["router"] else "none reaches 97%")
                + (f" (knn: {100 * knn:.1f}%; the issue notes a plain kNN router needs about 41%)"
                   if knn is not None and np.isfinite(knn) else "")
                + (f"; over fold seeds {', '.join(map(str, spread['seeds']))} {check['router']} ranges "
                   f"{100 * best_spread['min']:.1f}% - {100 * best_spread['max']:.1f}%" if best_spread else ""))
        print("\ntarget:\n  " + line)
        intro += ["Target:", "", f"- {line}", ""]
    load = (f"load average {at_start['load_average'][0]:.2f} at start, "
            f"{results['machine_at_end']['load_average'][0]:.2f} at end")
    intro = [(f"Run {at_start['date_utc']} on {at_start['cores']} cores ({load}); "
             f"{results['run_seconds'] / 60:.1f} min."), ""] + intro + [
        "Curves: " + ", ".join(f"`{Path(r['curve_png']).name}`" for r in results["datasets"].values())]
    json_path, md_path = write_results("multi_model_table", results, "Pools of many models (quality against cost)",
                                       intro, tables, args.out_dir)
    print(f"wrote {json_path}, {md_path} and the curve PNGs ({results['run_seconds'] / 60:.1f} min, {load})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
