"""Learning from a server's own log: retraining on partial feedback, and off-policy estimates of candidates.

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/learn_from_logs.py [--seeds 5] [--requests 5000] [--off-policy-requests 20000]

In-process simulation on LLMRouter's 9-model set and RouterBench's 11 models; for each seed:
30% of the queries are held out; a logging router (knn, k=25) is trained with every model's
outcome on 300 other queries and routes ``--requests`` requests drawn from the rest under the
objective quality=1,cost=0.5 with ``explore: 0.1``, a shadow outcome of one other model on 2%
of them; only what it served (and the shadows) is kept.  A knn router (k=100) is retrained
from that log by each method of :func:`crossroads.routers.logged.debiased` (dr, ips, dm) and
naively on the observed cells, and compared on the held-out queries with the same router
trained with every model's outcome on the same requests.

Targets (issue 13): the router retrained from the log recovers at least 80% of the reward
gain over the best single model that the full-information router reaches; with explore 0.1,
the doubly robust estimates of 5 candidate policies (the best and the cheapest single model,
and routers trained on the held-out queries under three objectives) within 5% of their true
mean reward on the logged requests.  Writes ``benchmarks/results/learn_from_logs.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _shared import Table, cell, load_embedded, machine, missing_data, skip_message, write_results
from partial_feedback import explore_probabilities, simulate_log

from crossroads.evaluate.candidate import estimate_candidate, expected_costs, logged_rewards
from crossroads.objective import Objective, parse_objective
from crossroads.objective.rules import MaxReward, decide
from crossroads.paths import shared_data_dir
from crossroads.routers import make_router
from crossroads.routers.logged import METHODS, debiased

DATASETS = {"llmrouter": ("llmrouter:{data}/llmrouter/dcrouter_train.json", "llmrouter/dcrouter_train.json"),
            "routerbench": ("routerbench:{data}/routerbench", "routerbench")}
OBJECTIVE = parse_objective("quality=1,cost=0.5")
LOGGING_SLICE = 300
EXPLORE = 0.1
SHADOW = 0.02
CANDIDATE_OBJECTIVES = ("quality=1", "quality=1,cost=0.5", "quality=1,cost=2")
#: Caps on 1 / propensity tried for DR targets (variance against bias).
CAPS = (2.0, 5.0)


def true_rewards(dataset, objective: Objective) -> np.ndarray:
    """Every cell's reward under ``objective`` as the estimates score a served cell (NaN where unrecorded)."""
    n = dataset.n_queries
    return np.stack([logged_rewards(replace(dataset, served=np.full(n, j), propensity=np.ones(n)), objective)
                     for j in range(dataset.n_models)], axis=1)


def choices(router, dataset, embeddings, objective: Objective) -> np.ndarray:
    return decide(router.predict(embeddings), expected_costs(dataset), MaxReward(objective)).chosen


def one_run(dataset, embeddings, seed: int, requests: int, off_policy_requests: int | None = None) -> dict:
    """One seed: the retraining on a log of ``requests``, and the off-policy estimates on a log of
    ``off_policy_requests`` (by default the same log) made by the same logging router."""
    rng = np.random.default_rng(seed)
    n = dataset.n_queries
    order = rng.permutation(n)
    test, rest = order[: int(0.3 * n)], order[int(0.3 * n):]
    slice_rows, pool = rest[:LOGGING_SLICE], rest[LOGGING_SLICE:]
    rows = rng.choice(pool, size=requests, replace=requests > len(pool))
    rewards = true_rewards(dataset, OBJECTIVE)
    test_data, test_emb = dataset.subset(test), embeddings[test]
    test_rewards = rewards[test]

    def per_query(router) -> np.ndarray:
        return test_rewards[np.arange(len(test)), choices(router, test_data, test_emb, OBJECTIVE)]

    def value(router) -> float:
        return float(per_query(router).mean())

    logging_router = make_router("knn", k=25).fit(dataset.subset(slice_rows), embeddings[slice_rows])
    full = dataset.subset(rows)
    logging_choice = choices(logging_router, full, embeddings[rows], OBJECTIVE)
    logs = simulate_log(full, explore_probabilities(logging_choice, dataset.n_models, EXPLORE), rng, shadow=SHADOW)
    best_fixed = float(np.nanmax(np.nanmean(test_rewards, axis=0)))
    routers = {"full information": make_router("knn", k=100).fit(full, embeddings[rows])}
    for method in METHODS:
        routers[method] = make_router("knn", k=100).fit(debiased(logs, embeddings[rows], method=method, seed=seed),
                                                        embeddings[rows])
    for cap in CAPS:
        routers[f"dr, weight <= {cap:g}"] = make_router("knn", k=100).fit(
            debiased(logs, embeddings[rows], max_weight=cap, seed=seed), embeddings[rows])
    routers["naive"] = make_router("knn", k=100).fit(replace(logs, served=None, propensity=None), embeddings[rows])
    values = {name: value(router) for name, router in routers.items()}
    values["logging policy"] = value(logging_router)
    gain = values["full information"] - best_fixed
    # the gain's standard error on the held-out queries: paired, against the best single model's rewards there
    best_column = int(np.nanargmax(np.nanmean(test_rewards, axis=0)))
    gain_se = float(np.std(per_query(routers["full information"]) - test_rewards[:, best_column]) / np.sqrt(len(test)))
    recovered = {name: (values[name] - best_fixed) / gain if gain > 0 else float("nan") for name in values}

    # off-policy: 5 candidates, none trained on the logged requests
    if off_policy_requests is not None and off_policy_requests != requests:
        requests = off_policy_requests
        rows = rng.choice(pool, size=requests, replace=requests > len(pool))
        full = dataset.subset(rows)
        logging_choice = choices(logging_router, full, embeddings[rows], OBJECTIVE)
        logs = simulate_log(full, explore_probabilities(logging_choice, dataset.n_models, EXPLORE), rng,
                            shadow=SHADOW)
    log_rewards = rewards[rows]
    candidates = {"best single model": np.full(requests, int(np.nanargmax(np.nanmean(test_rewards, axis=0)))),
                  "cheapest model": np.full(requests, int(np.argmin(np.nanmean(dataset.cost_usd, axis=0))))}
    held_out = make_router("knn", k=100).fit(test_data, test_emb)
    for text in CANDIDATE_OBJECTIVES:
        candidates[f"router ({text})"] = choices(held_out, full, embeddings[rows], parse_objective(text))
    off_policy = {}
    for name, chosen in candidates.items():
        truth = float(np.nanmean(log_rewards[np.arange(requests), chosen]))
        result = estimate_candidate(logs, chosen, OBJECTIVE, replicates=100, seed=seed)
        entry = {"truth": truth}
        for estimator in ("ips", "snips", "dr"):
            est = result.candidate["reward"][estimator]
            entry[estimator] = est.value
            entry[f"{estimator}_error"] = None if est.value is None else abs(est.value - truth) / truth
            entry[f"{estimator}_covers"] = None if est.value is None else bool(est.low <= truth <= est.high)
            entry[f"{estimator}_half_width"] = None if est.value is None else (est.high - est.low) / 2 / truth
        entry["matching"] = result.matching["reward"]
        off_policy[name] = entry
    return {"seed": seed, "best_fixed": best_fixed, "gain_se": gain_se, "values": values,
            "recovered": recovered,
            "off_policy": off_policy, "labelled": int(np.isfinite(logs.quality).sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--off-policy-requests", type=int, default=None,
                        help="logged requests the off-policy estimates rest on (default: --requests)")
    args = parser.parse_args()
    off_requests = args.off_policy_requests or args.requests
    data = shared_data_dir()
    missing = missing_data([data / path for _, path in DATASETS.values()])
    if missing:
        print(skip_message(missing))
        return 0
    results = {"machine": machine(), "seeds": args.seeds, "requests": args.requests,
               "off_policy_requests": off_requests, "objective": str(OBJECTIVE),
               "explore": EXPLORE, "shadow": SHADOW, "logging_slice": LOGGING_SLICE, "datasets": {}}
    retrain = Table(f"retrained from the log: share of the full-information router's reward gain over the best single "
                    f"model, held-out queries, mean over {args.seeds} seeds (target >= 80%)",
                    ["dataset", "full info gain", "its standard error", *METHODS,
                     *(f"dr, weight <= {c:g}" for c in CAPS), "naive", "logging policy"])
    estimates = Table(f"off-policy estimates of 5 candidates with explore {EXPLORE} on {off_requests:,} logged "
                      f"requests: mean relative error of the mean reward over {args.seeds} seeds, worst seed in "
                      "brackets (target: within 5%)",
                      ["dataset / candidate", "truth", "ips", "snips", "dr", "dr interval covers",
                       "dr 95% half-width", "decisions choosing as it does"])
    for name, (spec, _) in DATASETS.items():
        dataset, embeddings, _ = load_embedded(spec.format(data=data))
        complete = ~np.isnan(dataset.quality).any(axis=1)  # the truth needs every model's outcome
        dataset, embeddings = dataset.subset(complete), np.asarray(embeddings)[complete]
        runs = [one_run(dataset, embeddings, seed, args.requests, off_requests) for seed in range(args.seeds)]
        results["datasets"][name] = runs
        gain = np.mean([r["values"]["full information"] - r["best_fixed"] for r in runs])
        retrain.add(name, cell(gain, digits=4), cell(np.mean([r["gain_se"] for r in runs]), digits=4),
                    *(cell(np.mean([r["recovered"][m] for r in runs]), percent=True)
                      for m in (*METHODS, *(f"dr, weight <= {c:g}" for c in CAPS), "naive", "logging policy")))
        for candidate in runs[0]["off_policy"]:
            entries = [r["off_policy"][candidate] for r in runs]
            row = [f"{name}: {candidate}", cell(np.mean([e["truth"] for e in entries]))]
            for estimator in ("ips", "snips", "dr"):
                errors = [e[f"{estimator}_error"] for e in entries if e[f"{estimator}_error"] is not None]
                row.append(f"{100 * np.mean(errors):.1f}% ({100 * max(errors):.1f}%)" if errors else "-")
            row.append(f"{sum(bool(e['dr_covers']) for e in entries)}/{len(entries)}")
            widths = [e["dr_half_width"] for e in entries if e["dr_half_width"] is not None]
            row.append(f"{100 * np.mean(widths):.1f}%" if widths else "-")
            row.append(f"{np.mean([e['matching'] for e in entries]):.0f}")
            estimates.add(*row)
    retrain.print()
    estimates.print()
    write_results("learn_from_logs", results, "Learning from the own log: retraining and off-policy estimates",
                  [f"`python benchmarks/learn_from_logs.py --seeds {args.seeds} --requests {args.requests}"
                   + (f" --off-policy-requests {off_requests}" if off_requests != args.requests else "") + "`: "
                   f"{args.requests:,} logged requests per seed for retraining, {off_requests:,} for the off-policy "
                   f"estimates (objective {OBJECTIVE}, explore {EXPLORE}, {SHADOW:.0%} shadow outcomes), logging "
                   f"router trained on {LOGGING_SLICE} queries."],
                  [retrain, estimates])
    return 0


if __name__ == "__main__":
    sys.exit(main())
