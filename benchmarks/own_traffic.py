"""Are the report's figures right? Replayed traffic through the production twin, checked against the known truth.

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/own_traffic.py [--seeds 20] [--requests 2000]   # about 8 minutes

For each dataset (LLMRouter's 9-model set, RouterBench's 11 models) and each seed: the
recorded upstream (``crossroads twin``) in its own process, ``crossroads serve`` as a
process in front of it on a fresh SQLite store with one route (Thompson sampling,
objective quality=1,cost=0.5, ``explore: 0.1``), ``--requests`` of the dataset's queries
replayed through it with the openai SDK (8 in flight, each answer's recorded quality sent
back as feedback), then ``crossroads report``'s estimates against the truth over the
replayed queries: what always sending them to each model would have cost (the twin's
prices and token counts) and scored (their recorded quality).

Targets (issue 13): the 95% intervals for savings (against the dearest model) and for
served quality cover the truth in at least 18 of 20 seeds; the point estimates within 3%
of the truth; the twin sustains at least 200 replayed requests/s through the server.
Also reported: coverage and error of the off-policy (doubly robust) quality of each single
model, and of a candidate router's quality and cost (``crossroads report --candidate``: a
knn router fitted on every recorded outcome of the dataset, deciding under the route's
objective; the route stores prompts for it).  Writes ``benchmarks/results/own_traffic.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _shared import Table, machine, missing_data, skip_message, twin_process, write_results
from serve_helpers import ServerProcess

from crossroads.evaluate.candidate import candidate_choices, estimate_candidate
from crossroads.evaluate.replay import replay
from crossroads.evaluate.report import build_report
from crossroads.objective import parse_objective
from crossroads.objective.rules import make_rule
from crossroads.paths import shared_data_dir
from crossroads.store import open_store
from crossroads.store.export import read_logs
from crossroads.upstream.recorded import Recording

DATASETS = {"llmrouter": "llmrouter:{data}/llmrouter/dcrouter_train.json",
            "routerbench": "routerbench:{data}/routerbench"}
ROUTE = {"learner": "thompson", "objective": "quality=1,cost=0.5", "explore": 0.1}
REPLICATES = 200


def throughput(recording: Recording, twin_url: str, requests: int, workdir: Path) -> dict[str, float]:
    """Replayed requests per second, 16 in flight, without feedback (routing and answering alone) and with each
    answer's quality sent back: the median of 3 replays each through one server (the machine is noisy)."""
    config = recording.serve_config(twin_url)
    config["routes"] = {"auto": ROUTE}
    config["default_route"] = "auto"
    config["store"] = f"sqlite://{workdir / 'throughput.db'}"
    rates: dict[str, list[float]] = {"none": [], "quality": []}
    with ServerProcess(config, workdir) as server:
        for repeat in range(3):
            for feedback in rates:
                result = replay(recording, server.url + "/v1", "auto", requests=requests, concurrency=16,
                                feedback=feedback, seed=1000 + repeat)
                rates[feedback].append(result.summary()["requests_per_s"])
    return {"without_feedback": float(np.median(rates["none"])), "with_feedback": float(np.median(rates["quality"])),
            "runs": rates}


class Candidate:
    """A knn router fitted on every recorded outcome of the dataset: a fixed policy whose true quality and cost on
    any replayed queries the recording knows."""

    def __init__(self, recording: Recording):
        from crossroads.embeddings import make_embedder
        from crossroads.routers import make_router

        self.embedder = make_embedder("minilm-onnx")
        self.recording = recording
        dataset = recording.dataset
        self.router = make_router("knn").fit(dataset, self.embedder.embed(dataset.prompts, progress=True),
                                             embedder=self.embedder.name)
        self.objective = parse_objective(ROUTE["objective"])
        self.rule = make_rule("reward", self.objective)

    def check(self, store: object, rows: dict[str, int], seed: int) -> dict:
        """The candidate's off-policy estimates on the store's logged decisions, and whether they cover the truth:
        the recorded quality and the twin's cost of the model it picks for each replayed query (over the queries
        where that model's outcome is recorded: RouterBench lacks a few)."""
        logs = read_logs(store, quality_from="user").dataset
        chosen = candidate_choices(self.router, logs, self.embedder.embed(logs.prompts), self.rule)
        estimate = estimate_candidate(logs, chosen, self.objective, "reward", REPLICATES, seed)
        picked = [(rows[decision_id], logs.model_names[j]) for decision_id, j in zip(logs.query_ids, chosen)]
        quality = np.array([self.recording.quality(row, model) for row, model in picked])
        cost = np.array([self.recording.cost(row, model) for row, model in picked])
        truth = {"quality": float(np.nanmean(quality)), "cost_usd": float(np.nanmean(cost))}
        out = {"matching": estimate.matching["quality"], "decisions": estimate.decisions,
               "picks_unrecorded": int(np.isnan(quality).sum())}
        for metric, value in truth.items():
            dr = estimate.candidate[metric]["dr"].to_dict()
            out[metric] = {"dr": dr, "truth": value, "covered": _covers(dr, value),
                           "error": None if dr["value"] is None else dr["value"] / value - 1.0}
        return out


def one_run(recording: Recording, twin_url: str, seed: int, requests: int, workdir: Path,
            candidate: Candidate) -> dict:
    """Replay, report and compare with the truth for one seed."""
    config = recording.serve_config(twin_url)
    config["routes"] = {"auto": ROUTE}
    config["default_route"] = "auto"
    config["store"] = f"sqlite://{workdir / f'store-{seed}.db'}"
    config["store_prompts"] = True  # for the candidate router, which decides from the prompt
    with ServerProcess(config, workdir) as server:
        result = replay(recording, server.url + "/v1", "auto", requests=requests, concurrency=8, seed=seed)
    with open_store(config["store"]) as store:
        report = build_report(store, replicates=REPLICATES, seed=seed)
        checked = candidate.check(store, {r.decision_id: r.row for r in result.answered}, seed)
    truth = result.truth["always"]
    served = result.summary()
    dearest = max(truth, key=lambda m: truth[m]["spend_usd"])
    estimate = report["savings"]["models"][dearest]["savings"]
    true_savings = 1.0 - served["spend_usd"] / truth[dearest]["spend_usd"]
    quality = report["quality"]["served"]
    # the served quality's truth: the recorded quality of every answer served, labelled or not
    true_quality = float(np.mean([recording.quality(r.row, r.model) for r in result.answered]))
    models = {}
    for model, value in truth.items():
        spend = report["savings"]["models"][model]["spend_usd"]
        dr = report["quality"]["single_models"][model]["dr"]
        models[model] = {"spend_covered": _covers(spend, value["spend_usd"]),
                         "spend_error": spend["value"] / value["spend_usd"] - 1.0,
                         "dr_covered": _covers(dr, value["mean_quality"]),
                         "dr_error": None if dr["value"] is None else dr["value"] / value["mean_quality"] - 1.0}
    return {"seed": seed, "requests_per_s": served["requests_per_s"], "answered": served["answered"],
            "dearest": dearest, "savings": estimate, "true_savings": true_savings,
            "savings_covered": _covers(estimate, true_savings),
            "savings_error": estimate["value"] - true_savings,
            "quality": quality, "true_quality": true_quality, "quality_covered": _covers(quality, true_quality),
            "quality_error": quality["value"] / true_quality - 1.0, "models": models, "candidate": checked}


def _median_abs(errors: list) -> float | None:
    known = [abs(error) for error in errors if error is not None]
    return float(np.median(known)) if known else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _covers(estimate: dict, truth: float) -> bool:
    return estimate["low"] is not None and estimate["low"] <= truth <= estimate["high"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    args = parser.parse_args()
    specs = {key: DATASETS[key].format(data=shared_data_dir()) for key in args.datasets.split(",")}
    missing = missing_data([Path(spec.split(":", 1)[1]) for spec in specs.values()])
    if missing:
        print(skip_message(missing))
        return
    results = {"machine": machine(), "route": ROUTE, "requests": args.requests, "seeds": args.seeds, "datasets": {}}
    table = Table(f"report estimates against the truth, {args.seeds} seeds x {args.requests:,} replayed requests",
                  ["dataset", "savings vs dearest covered", "max abs savings error (points)",
                   "served quality covered", "max abs quality error", "per-model spend covered",
                   "max abs spend error", "single-model DR covered", "median abs DR error",
                   "candidate quality DR covered", "its median abs error", "candidate cost DR covered",
                   "its median abs error",
                   "requests/s, 8 in flight, with feedback (min over seeds)",
                   "requests/s, 16 in flight, with feedback (median of 3)",
                   "requests/s, 16 in flight, without feedback (median of 3)"])
    for key, spec in specs.items():
        recording = Recording.load([spec])
        runs = []
        with tempfile.TemporaryDirectory() as tmp, twin_process(spec) as twin_url:
            rates = throughput(recording, twin_url, args.requests, Path(tmp))
            print(f"{key}: {rates['without_feedback']:.0f} replayed requests/s without feedback, "
                  f"{rates['with_feedback']:.0f} with feedback (16 in flight)", flush=True)
            candidate = Candidate(recording)
            for seed in range(args.seeds):
                runs.append(one_run(recording, twin_url, seed, args.requests, Path(tmp), candidate))
                run = runs[-1]
                fitted = run["candidate"]["quality"]
                print(f"{key} seed {seed}: savings {run['savings']['value']:.4f} (truth {run['true_savings']:.4f}, "
                      f"covered {run['savings_covered']}), quality {run['quality']['value']:.4f} "
                      f"(truth {run['true_quality']:.4f}), candidate quality {fitted['dr']['value']} "
                      f"(truth {fitted['truth']:.4f}), {run['requests_per_s']:.0f} req/s", flush=True)
        models = [m for run in runs for m in run["models"].values()]
        dr_errors = [abs(m["dr_error"]) for m in models if m["dr_error"] is not None]
        summary = {
            "savings_covered": sum(r["savings_covered"] for r in runs),
            "savings_max_abs_error": max(abs(r["savings_error"]) for r in runs),
            "quality_covered": sum(r["quality_covered"] for r in runs),
            "quality_max_abs_error": max(abs(r["quality_error"]) for r in runs),
            "spend_covered": sum(m["spend_covered"] for m in models), "spend_estimates": len(models),
            "spend_max_abs_error": max(abs(m["spend_error"]) for m in models),
            "dr_covered": sum(m["dr_covered"] for m in models), "dr_estimates": len(models),
            "dr_median_abs_error": float(np.median(dr_errors)) if dr_errors else None,
            **{f"candidate_{metric}_{what}": figure for metric in ("quality", "cost_usd") for what, figure in (
                ("covered", sum(r["candidate"][metric]["covered"] for r in runs)),
                ("median_abs_error", _median_abs([r["candidate"][metric]["error"] for r in runs])))},
            "candidate_matching_min": min(r["candidate"]["matching"] for r in runs),
            "requests_per_s_min": min(r["requests_per_s"] for r in runs),
            "requests_per_s_median": float(np.median([r["requests_per_s"] for r in runs])),
            "requests_per_s_without_feedback": rates["without_feedback"],
            "requests_per_s_with_feedback": rates["with_feedback"], "throughput_runs": rates["runs"],
        }
        results["datasets"][key] = {"spec": spec, "summary": summary, "runs": runs}
        table.add(key, f"{summary['savings_covered']}/{len(runs)}", f"{100 * summary['savings_max_abs_error']:.2f}",
                  f"{summary['quality_covered']}/{len(runs)}", f"{100 * summary['quality_max_abs_error']:.2f}%",
                  f"{summary['spend_covered']}/{summary['spend_estimates']}",
                  f"{100 * summary['spend_max_abs_error']:.2f}%",
                  f"{summary['dr_covered']}/{summary['dr_estimates']}",
                  "-" if summary["dr_median_abs_error"] is None else f"{100 * summary['dr_median_abs_error']:.1f}%",
                  *(cell for metric in ("quality", "cost_usd") for cell in (
                      f"{summary[f'candidate_{metric}_covered']}/{len(runs)}",
                      _percent(summary[f"candidate_{metric}_median_abs_error"]))),
                  f"{summary['requests_per_s_min']:.0f}", f"{rates['with_feedback']:.0f}",
                  f"{rates['without_feedback']:.0f}")
    table.print()
    write_results("own_traffic", results, "Own traffic: the report against the truth",
                  [f"Run {results['machine']['date_utc']} on {results['machine']['cores']} cores. Route {ROUTE}; "
                   "errors are relative (savings: percentage points); prompts stored (`store_prompts: true`) for the "
                   "candidate, a knn router fitted on every recorded outcome, estimated by `report --candidate`'s "
                   "code under the route's objective. `python benchmarks/own_traffic.py`"], [table])


if __name__ == "__main__":
    main()
