"""Cascades and cascade routing against plain routers, replaying recorded responses (issue 16, section 2).

Run from the repository root (data from ``crossroads.paths.shared_data_dir()``)::

    python benchmarks/cascades.py                      # about 16 min on 2 cores once embeddings are cached
    python benchmarks/cascades.py --datasets routerbench

5-fold cross-validation by query (seed 0) on RouterBench (complete rows) and MMLU-Pro
(the complete rows, a seeded 4,000-query subsample as in ``multi_model_table.py``, with
every model's chain-of-thought response).  Compared: the plain routers knn, ridge and
ensemble (knn+ridge) through the harness; a fixed cascade (chain chosen on the training
folds) and cascade routing, each with the learned verifier, from the knn router's
predictions; cascade routing with the untrained agreement verifier.  Every model a
cascade calls is paid for.  Per dataset: each method's AIQ and cost share at 97% of the
best single model's quality; per category: knn against cascade routing, to show where
cascades do not help (a task with no extractable answer).

Targets (issue 16): cascade routing reaches 97% of the best single model's quality at a
cost share at least 25% (relative) below the best plain router's, and its AIQ is never
below the best router's.  Writes ``benchmarks/results/cascades.{json,md}``; exits 0 even
when a target fails (the check line says FAIL).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _shared import (
    Table,
    cell,
    evaluate_each,
    load_embedded,
    machine,
    missing_data,
    skip_message,
    write_results,
)

from crossroads.grading.verifiers import Answers, Verifier
from crossroads.paths import shared_data_dir

ROUTERS = ["knn", "ridge", "ensemble"]
CASCADE_ROUTER = "knn"
SEED = 0
MMLU_PRO_QUERIES = 4000
DATASETS = {
    "routerbench": ("RouterBench", "routerbench", "routerbench"),
    "mmlu_pro": ("MMLU-Pro", "mmlu-pro", "mmlu_pro/eval_results"),
}


def select(key: str):
    def rows(dataset):
        complete = dataset.complete_rows()
        if key == "mmlu_pro" and MMLU_PRO_QUERIES < complete.n_queries:
            picked = np.random.default_rng(0).choice(complete.n_queries, MMLU_PRO_QUERIES, replace=False)
            return complete.subset(np.sort(picked))
        return complete
    return rows


def per_category(dataset, embeddings, embedder: str, routing, router: str) -> Table:
    """The router against cascade routing on each category, scored against that category's own best single model."""
    from crossroads.evaluate.cascade_cv import curve_metrics
    from crossroads.evaluate.harness import cross_validated_predictions
    from crossroads.evaluate.metrics import cost_quality_points
    from crossroads.evaluate.splits import cross_validation_splits
    from crossroads.objective.cost import ExpectedCost, prompt_tokens
    from crossroads.routers import ROUTERS as REGISTRY

    splits = list(cross_validation_splits(dataset.n_queries, 5, SEED))
    prior, _ = cross_validated_predictions(REGISTRY.spec(router), dataset, embeddings, splits, embedder=embedder)
    tokens = prompt_tokens(dataset.prompts, dataset.full_prompts)
    expected = np.empty_like(dataset.cost_usd)
    for split in splits:
        expected[split.test] = ExpectedCost.fit(tokens[split.train], dataset.cost_usd[split.train]).predict(
            tokens[split.test])
    kinds = Answers.from_dataset(dataset).kinds
    table = Table(f"per category: {router} router vs cascade routing (learned verifier), against the category's best "
                  "model", ["category", "queries", "answer kind", f"{router} AIQ", "cascade AIQ", f"{router} cost@97%",
                            "cascade cost@97%",
                   "cascade helps"])
    categories = np.array(dataset.categories)
    for category in sorted(set(categories)):
        rows = np.flatnonzero(categories == category)
        quality, cost = dataset.quality[rows], dataset.cost_usd[rows]
        curve = cost_quality_points(prior[rows], expected[rows], quality, cost)
        plain = curve_metrics(curve.mean_cost_usd, curve.mean_quality, quality, cost)
        mine = curve_metrics(routing.cost_usd[:, rows].mean(1), routing.quality[:, rows].mean(1), quality, cost)
        share_gain = plain["cost_share_at_97"] - mine["cost_share_at_97"]
        helps = ("yes" if (share_gain > 0.02 or (np.isnan(plain["cost_share_at_97"]) and np.isfinite(
            mine["cost_share_at_97"]))) and mine["aiq"] >= plain["aiq"] - 0.002 else "no")
        table.add(category, str(len(rows)), kinds[rows[0]], cell(plain["aiq"]), cell(mine["aiq"]),
                  cell(plain["cost_share_at_97"], True), cell(mine["cost_share_at_97"], True), helps)
    return table


class KnowsQuality(Verifier):
    """A bound, not a verifier: trusts each called answer exactly as much as its recorded quality (read from
    ``Answers.codes``, which :func:`bounds` fills with the quality)."""

    name = "knows-quality"

    def _score(self, answers, prior, expected_cost_usd, called):
        return np.where(called, answers.codes, prior)


class KnowsVotePatterns(Verifier):
    """A bound, not a verifier: what the extracted answers tell when their accuracy is known in hindsight.

    It trusts an answer as much as the answers of the same model, in the same category, with the same called
    models agreeing and disagreeing with it, turned out good over every query of the dataset, the test queries
    included (Laplace-smoothed).  It reads each row's index from ``Answers.length_chars`` (see :func:`bounds`).
    """

    name = "knows-vote-patterns"

    def __init__(self, dataset):
        self.answers = Answers.from_dataset(dataset)
        self.quality = np.clip(dataset.quality, 0.0, 1.0)
        self.rows_of = {c: np.flatnonzero(np.array(dataset.categories) == c) for c in set(dataset.categories)}
        self.categories = dataset.categories
        self.rates: dict[tuple, float] = {}

    def rate(self, row: int, j: int, called: np.ndarray) -> float:
        codes = self.answers.codes[row]
        votes = tuple((k, bool(codes[k] == codes[j])) for k in np.flatnonzero(called) if k != j)
        key = (self.categories[row], j, np.isnan(codes[j]), votes)
        if key not in self.rates:
            rows = self.rows_of[self.categories[row]]
            same = np.isnan(self.answers.codes[rows, j]) == np.isnan(codes[j])
            for k, agrees in votes:
                same &= (self.answers.codes[rows, k] == self.answers.codes[rows, j]) == agrees
            self.rates[key] = (self.quality[rows[same], j].sum() + 1) / (same.sum() + 2)
        return self.rates[key]

    def _score(self, answers, prior, expected_cost_usd, called):
        trust = np.array(prior, dtype=np.float64)
        for r, row in enumerate(answers.length_chars[:, 0].astype(int)):
            for j in np.flatnonzero(called[r]):
                trust[r, j] = self.rate(row, j, called[r])
        return trust


def bounds(dataset, embeddings, embedder: str, router: str) -> dict[str, dict]:
    """Cascade routing's metrics with :class:`KnowsQuality` and with :class:`KnowsVotePatterns` for its verifier."""
    from dataclasses import replace

    from crossroads.evaluate.cascade_cv import evaluate_cascades

    answers = Answers.from_dataset(dataset)
    rows = np.repeat(np.arange(dataset.n_queries, dtype=np.float64)[:, None], dataset.n_models, axis=1)
    found = {}
    for name, verifier, reads in (
            ("knows_quality", KnowsQuality(), replace(answers, codes=np.clip(dataset.quality, 0.0, 1.0))),
            ("knows_vote_patterns", KnowsVotePatterns(dataset), replace(answers, length_chars=rows))):
        (curve,) = evaluate_cascades(["routing"], dataset, embeddings, router=router, verifier=verifier,
                                     answers=reads, seed=SEED, embedder=embedder)
        found[name] = curve.entry(dataset).metrics
    return found


def run_dataset(key: str, router: str = CASCADE_ROUTER) -> tuple[dict, list]:
    from crossroads.evaluate.cascade_cv import evaluate_cascades

    title, fmt, folder = DATASETS[key]
    spec = f"{fmt}:{shared_data_dir() / folder}" + (",responses=true" if key == "mmlu_pro" else "")
    print(f"\n== {title} ({spec})")
    dataset, embeddings, embedder = load_embedded(spec, rows=select(key))
    started = time.perf_counter()
    evaluation, seconds, _ = evaluate_each(ROUTERS, dataset, embeddings, seed=SEED, pair=None, embedder=embedder)
    curves = []
    for kinds, verifier in ((["routing", "fixed"], "learned"), (["routing"], "agreement")):
        began = time.perf_counter()
        found = evaluate_cascades(kinds, dataset, embeddings, router=router, verifier=verifier, seed=SEED,
                                  embedder=embedder, on_step=print)
        for curve in found:
            seconds[curve.name] = (time.perf_counter() - began) / len(found)
        curves += found
    cascade_entries = [curve.entry(dataset) for curve in curves]
    bound = bounds(dataset, embeddings, embedder, router)
    routers = [e for e in evaluation.entries if e.kind == "router"]
    models = [e for e in evaluation.entries if e.kind == "model"]
    best_model = min(models, key=lambda e: (-e.metrics["mean_quality"], e.metrics["mean_cost_usd"]))
    best_router = min(routers, key=lambda e: np.nan_to_num(e.metrics["cost_share_at_97"], nan=np.inf))
    best_aiq = max(e.metrics["aiq"] for e in routers)
    routing = cascade_entries[0]
    share, plain = routing.metrics["cost_share_at_97"], best_router.metrics["cost_share_at_97"]
    reduction = 1 - share / plain if np.isfinite(share) and np.isfinite(plain) else float("nan")
    share_ok = bool(np.isfinite(reduction) and reduction >= 0.25)
    aiq_ok = bool(routing.metrics["aiq"] >= best_aiq)
    table = Table(f"{title}: {dataset.n_queries} queries x {dataset.n_models} models, 5-fold CV (seed {SEED}); best "
                  f"single model {best_model.name}, quality {best_model.metrics['mean_quality']:.3f} at "
                  f"US${best_model.metrics['mean_cost_usd']:.6f}/query",
                  ["method", "kind", "AIQ", "best quality", "cost@95%", "cost@97%", "calls/query at 97%",
                   "chain latency at 97% (s)", "time (s)"])
    for entry in routers + cascade_entries + [e for e in evaluation.entries if e.kind == "oracle"]:
        m = entry.metrics
        table.add(entry.name, entry.kind, cell(m["aiq"]), cell(m["best_quality"]), cell(m["cost_share_at_95"], True),
                  cell(m["cost_share_at_97"], True), cell(m.get("mean_calls_at_97"), digits=2),
                  cell(m.get("mean_latency_s_at_97"), digits=2), cell(seconds.get(entry.name), digits=0))
    fixed = next(c for c in curves if c.kind == "fixed")
    table.notes.append(f"fixed cascade chains chosen on the training folds: "
                       f"{'; '.join(sorted({' -> '.join(chain) for chain in fixed.chains}))}")
    table.notes.append("cascades: every model called is paid for; latency is the sum of the chain's latencies "
                       "(estimated from answer lengths by price tier, crossroads.evaluate.latency).")
    knows, votes = bound["knows_quality"], bound["knows_vote_patterns"]
    table.notes.append(f"bound: the same cascade routing with a verifier that knows each called answer's recorded "
                       f"quality reaches cost@97% {cell(knows['cost_share_at_97'], True)}, AIQ {knows['aiq']:.3f}: "
                       "what the policy could do with a perfect verifier.")
    table.notes.append(f"bound: with a verifier calibrated in hindsight on which called answers agree (per category, "
                       f"model and vote pattern, over every query, the test queries included) it reaches cost@97% "
                       f"{cell(votes['cost_share_at_97'], True)}, AIQ {votes['aiq']:.3f}: what the votes tell this "
                       "policy when their accuracy is known in hindsight.")
    category_table = per_category(dataset, embeddings, embedder, curves[0], router)
    check = (f"{'PASS' if share_ok and aiq_ok else 'FAIL'}  {title}: cascade routing cost@97% "
             f"{cell(share, True)} vs best router {best_router.name} {cell(plain, True)} "
             f"({cell(reduction, True)} lower, target >= 25%: {'met' if share_ok else 'not met'}); AIQ "
             f"{routing.metrics['aiq']:.4f} vs best router {best_aiq:.4f} ({'met' if aiq_ok else 'not met'})")
    print(check)
    table.print()
    category_table.print()
    result = {
        "queries": dataset.n_queries, "models": dataset.n_models, "seconds": time.perf_counter() - started,
        "best_single_model": {"name": best_model.name, **best_model.metrics},
        "entries": {e.name: {k: v for k, v in e.metrics.items()} for e in routers + cascade_entries},
        "curves": {e.name: {"mean_cost_usd": e.cost_curve.mean_cost_usd, "mean_quality": e.cost_curve.mean_quality}
                   for e in routers + cascade_entries},
        "fixed_chains": fixed.chains,
        **{f"bound_verifier_{name}": {"cost_share_at_97": found["cost_share_at_97"], "aiq": found["aiq"]}
           for name, found in bound.items()},
        "target": {"best_router": best_router.name, "cost_share_reduction": reduction, "cost_share_met": share_ok,
                   "aiq_met": aiq_ok},
        "per_category": {row[0]: dict(zip(category_table.columns[1:], row[1:])) for row in category_table.rows},
    }
    return result, [check, table, category_table]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: " + ", ".join(DATASETS))
    parser.add_argument("--cascade-router", default=CASCADE_ROUTER,
                        help=f"the router whose predictions the cascades start from (default {CASCADE_ROUTER})")
    args = parser.parse_args()
    keys = [key for key in args.datasets.split(",") if key]
    missing = missing_data([shared_data_dir() / DATASETS[key][2] for key in keys])
    if missing:
        print(skip_message(missing))
        return 0
    started = time.perf_counter()
    results, parts = {"machine": machine(), "datasets": {}}, []
    for key in keys:
        results["datasets"][key], found = run_dataset(key, args.cascade_router)
        parts += found
    results["machine"]["load_average_end"] = list(np.round(np.array(__import__("os").getloadavg()), 2))
    minutes = (time.perf_counter() - started) / 60
    checks = [part for part in parts if isinstance(part, str)]
    intro = [(f"Run {results['machine']['date_utc']} on {results['machine']['cores']} cores; {minutes:.1f} min. "
             "Reproduce: `python benchmarks/cascades.py --cascade-router " + args.cascade_router + "`."), "", "Targets (issue 16):", "",
             *[f"- {check}" for check in checks], "",
             (f"Cascades start from the {args.cascade_router} router's cross-validated predictions; MMLU-Pro is a seeded "
             f"{MMLU_PRO_QUERIES}-query subsample of its complete rows (as in multi_model_table.py).")]
    write_results("cascades", results, "Cascades and cascade routing (replayed recorded responses)", intro,
                  [part for part in parts if not isinstance(part, str)])
    print(f"wrote benchmarks/results/cascades.json and .md ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
