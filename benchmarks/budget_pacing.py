"""Budgets that pace, replayed on the shared pools against the targets of issue 15 (section 2).

Run from the repository root: ``python benchmarks/budget_pacing.py`` (about 3 minutes on
2 cores; ``--seeds 2 --requests 3000`` about 1).  For each pool (LLMRouter's 9 models, RouterBench's 11), seed, budget
level and mode, a kNN router is trained on half the queries (the split depends on the seed)
and the other half is streamed over one simulated day of day/night traffic (noon 4x midnight)
with a 3x burst for 5% of the day at noon; the pacing controller routes each request by
``predicted quality - lambda * expected cost``.  Budgets sit at 10%, 30% and 60% of the way
from the spend of always choosing the cheapest model to that of the best predicted model.

Targets: final spend within 5% of the budget (never over it in cap mode); mean quality at
least 98% of the best fixed willingness to pay in hindsight at equal spend (the upper
envelope of every fixed lambda on the same stream); back within 2% of the budget of the target
curve within 10% of the day after the burst.  A scenario without the burst, and one with a
uniform traffic profile (spend even in time), show where the quality goes; bursts at 20% and
80% of the day, whether the controller's settings (chosen on these pools, with the burst at
noon) hold elsewhere.
Writes ``benchmarks/results/budget_pacing.{json,md}``; each check line says PASS or FAIL.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _shared import Table, cell, load_embedded, machine, missing_data, skip_message, write_results

from crossroads.evaluate.budget_simulation import Traffic, held_out_predictions, simulate_budget
from crossroads.objective.budget import Budget
from crossroads.paths import shared_data_dir

POOLS = {"llmrouter-9": "llmrouter:{data}/llmrouter/dcrouter_train.json",
         "routerbench-11": "routerbench:{data}/routerbench"}
LEVELS = (0.1, 0.3, 0.6)
REQUESTS = 5000
#: (name, where the burst starts (None: no burst), controller's traffic profile, modes); the targets are checked
#: on "burst", at noon; bursts in the morning and the evening show whether the controller's settings hold there
SCENARIOS = (("burst", 0.5, "learned", ("pace", "cap")),
             ("no burst", None, "learned", ("pace",)),
             ("burst, uniform profile", 0.5, "uniform", ("pace",)),
             ("burst at 20% of the day", 0.2, "learned", ("pace", "cap")),
             ("burst at 80% of the day", 0.8, "learned", ("pace", "cap")))


def budget_levels(quality, cost, predicted, expected, traffic: Traffic) -> dict[float, float]:
    """US$ budgets at each level between always-cheapest and always-best-predicted spend, for the stream's size."""
    available = ~np.isnan(quality) & ~np.isnan(cost)
    rows = np.arange(len(quality))
    best = np.argmax(np.where(available, predicted, -np.inf), axis=1)
    cheapest = np.argmin(np.where(available, np.broadcast_to(expected, quality.shape), np.inf), axis=1)
    burst = 0.0 if traffic.burst_at is None else (traffic.burst_x - 1) * traffic.burst_len
    requests = traffic.requests * (1 + burst)
    low, high = cost[rows, cheapest].mean() * requests, cost[rows, best].mean() * requests
    return {level: float(low + level * (high - low)) for level in LEVELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    args = parser.parse_args()
    specs = {name: spec.format(data=shared_data_dir()) for name, spec in POOLS.items()}
    missing = missing_data([Path(spec.split(":", 1)[1]) for spec in specs.values()])
    if missing:
        print(skip_message(missing))
        return
    started = time.perf_counter()
    results: dict = {"machine": machine(), "requests": args.requests, "seeds": args.seeds, "levels": LEVELS,
                     "pools": {}, "checks": {}}
    table = Table(f"pacing a day's budget, {args.seeds} seeds x ~{args.requests:,} requests (mean over seeds; "
                  "worst seed in brackets)",
                  ["pool", "scenario", "mode", "budget level", "budget US$", "spend / budget", "quality",
                   "best fixed at equal spend", "quality / best fixed", "max |spend - target| / budget",
                   "back on track after burst (share of day)"])
    rows = []
    for pool, spec in specs.items():
        dataset, embeddings, _ = load_embedded(spec)
        splits = [held_out_predictions(dataset, embeddings, seed=seed) for seed in range(args.seeds)]
        results["pools"][pool] = {"spec": spec, "models": dataset.model_names, "runs": []}
        for scenario, burst, profile, modes in SCENARIOS:
            traffic = Traffic(args.requests, burst_at=burst)
            for level in LEVELS:
                for mode in modes:
                    summaries = []
                    for seed, (test, predicted, expected) in enumerate(splits):
                        quality, cost = dataset.quality[test], dataset.cost_usd[test]
                        usd = budget_levels(quality, cost, predicted, expected, traffic)[level]
                        run = simulate_budget(quality, cost, predicted, expected, Budget(usd, "day", mode), traffic,
                                              seed=seed, profile=profile, model_names=dataset.model_names)
                        summaries.append({"seed": seed, **run.summary})
                    row = _row(pool, scenario, mode, level, summaries)
                    rows.append(row)
                    results["pools"][pool]["runs"].append(row)
                    table.add(pool, scenario, mode, f"{level:.0%}", f"{np.mean(row['budget_usd']):.3g}",
                              _span(row["spend_over_budget"], 3), _span(row["mean_quality"], 4, best=max),
                              f"{np.mean(row['best_fixed_quality']):.4f}",
                              _span(row["quality_vs_best_fixed"], 3, best=max),
                              _span(row["max_deviation"], 1, percent=True, best=min),
                              _span(row.get("recovery"), 3, best=min) if burst is not None else "-")
                    print(f"{pool} | {scenario} | {mode} | {level:.0%}: spend/budget {row['spend_over_budget']}, "
                          f"quality ratio {np.round(row['quality_vs_best_fixed'], 4).tolist()}", flush=True)
    table.print()
    lines = _checks(rows, results)
    results["seconds"] = time.perf_counter() - started
    intro = [__doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Command: `python benchmarks/budget_pacing.py --seeds {args.seeds} --requests {args.requests}` "
             f"({results['seconds']:.0f} s on {results['machine']['cores']} cores).", "",
             *[f"- {line}" for line in lines]]
    paths = write_results("budget_pacing", results, "Budgets that pace (issue 15, section 2)", intro, [table])
    print("wrote " + ", ".join(str(p) for p in paths))


def _row(pool: str, scenario: str, mode: str, level: float, summaries: list[dict]) -> dict:
    keys = ("budget_usd", "spend_over_budget", "mean_quality", "best_fixed_quality", "quality_vs_best_fixed",
            "max_deviation", "recovery", "refused_share")
    row = {"pool": pool, "scenario": scenario, "mode": mode, "level": level}
    for key in keys:
        if key in summaries[0]:
            row[key] = [float(s[key]) for s in summaries]
    return row


def _span(values, digits: int, percent: bool = False, best=None) -> str:
    if values is None:
        return "-"
    values = np.asarray(values, dtype=float)
    if best is None:  # the farthest from 1, either way
        worst = values[int(np.nanargmax(np.abs(values - 1)))]
    else:
        worst = np.nanmin(values) if best is max else np.nanmax(values)
    if np.isnan(values).any():
        worst = np.nan
    return f"{cell(float(np.nanmean(values)), percent, digits)} ({cell(float(worst), percent, digits)})"


def _checks(rows: list[dict], results: dict) -> list[str]:
    lines = []

    def check(key: str, ok: bool, text: str) -> None:
        results["checks"][key] = {"pass": bool(ok), "text": text}
        lines.append(f"{'PASS' if ok else 'FAIL'}  {text}")
        print(lines[-1], flush=True)

    burst = [r for r in rows if r["scenario"] == "burst"]
    errors = [abs(x - 1) for r in burst for x in r["spend_over_budget"]]
    check("spend_within_5pct", max(errors) <= 0.05,
          f"final spend within 5% of the budget: worst |spend / budget - 1| = {max(errors):.3f} over "
          f"{len(errors)} runs (burst scenario, pace and cap)")
    over = [x for r in burst if r["mode"] == "cap" for x in r["spend_over_budget"]]
    check("cap_never_over", max(over) <= 1.0, f"cap mode never over the budget: highest spend / budget {max(over):.4f}")
    ratios = [(np.mean(r["quality_vs_best_fixed"]), r) for r in burst]
    low, low_row = min(ratios, key=lambda pair: pair[0])
    worst_seed = min(x for r in burst for x in r["quality_vs_best_fixed"])
    check("quality_98pct", low >= 0.98,
          f"quality at least 98% of the best fixed lambda at equal spend: lowest mean over seeds {low:.4f} "
          f"({low_row['pool']}, {low_row['mode']}, level {low_row['level']:.0%}); worst single run {worst_seed:.4f}")
    calm = [np.mean(r["quality_vs_best_fixed"]) for r in rows if r["scenario"] == "no burst"]
    lines.append(f"(without the burst: lowest mean quality / best fixed {min(calm):.4f})")
    elsewhere = [r for r in rows if r["scenario"].startswith("burst at")]
    lines.append(f"(with the burst at 20% or 80% of the day: lowest mean quality / best fixed "
                 f"{min(np.mean(r['quality_vs_best_fixed']) for r in elsewhere):.4f}, worst recovery "
                 f"{max(x for r in elsewhere for x in r['recovery']):.3f} of the day)")
    recovery = [x for r in burst for x in r["recovery"]]
    worst = max(recovery) if not np.isnan(recovery).any() else float("nan")
    check("burst_recovery_10pct", bool(worst <= 0.10),
          f"back on track (within 2% of the budget of the target curve) within 10% of the day after the 3x burst: "
          f"worst {worst:.3f} of the day over {len(recovery)} runs")
    return lines


if __name__ == "__main__":
    main()
