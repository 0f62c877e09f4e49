"""Which recipe should train the shipped ``default`` router: leave one dataset out over every shared set.

Run from the repository root::

    python benchmarks/default_router.py                      # about 50 min once the embeddings are cached
    python benchmarks/default_router.py --candidates 0,2 --arena-candidates 0

The default router is what users with no data get: it must place any model by its
descriptors (only ``open_pool`` routers qualify, i.e. ``irt``), stay small and predict
with numpy alone.  Two parts:

* ``lodo``: for each shared set (Arena-Bench included), train each candidate on the other
  sets it uses, minus the training questions that recur in the held-out set (normalised
  text), and score it on the held-out set: APGR for the GPT-4-1106 / Mixtral-8x7B pair where
  the set has both, AIQ, best quality and the cost share at 95% on pools.  Next to it,
  the shipped default (``src/crossroads/pretrained/default.npz``, marked where it saw the
  held-out set in training) and the random router.  The first candidate is the shipped
  recipe on the shipped default's sets, trained without the held-out set: where the shipped
  file saw that set, its row is the fair comparison.  A cap keeps at most N queries of each
  training set (a fixed random sample), so the large sets do not drown the small ones:
  ``irt`` weighs every query the same and ``fit`` takes no sample weights.
* ``arena``: does chat data in training help on unseen chat prompts?  5-fold
  cross-validation on Arena-Bench, each candidate trained on its other sets plus the
  other four folds, against the same router without Arena-Bench.

Writes ``benchmarks/results/default_router.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _shared import Table, cell, machine, missing_data, run_parts, skip_message, write_results
from generalisation import GPT4, MIXTRAL
from generalisation import SETS as SHARED_SETS

from crossroads.data.dataset import RoutingDataset, combine
from crossroads.data.dedup import overlap
from crossroads.data.importers import load_dataset
from crossroads.embeddings import make_embedder
from crossroads.evaluate import metrics
from crossroads.evaluate.harness import evaluate, expected_costs
from crossroads.paths import shared_data_dir
from crossroads.routers import ROUTERS

SETS = {**SHARED_SETS, "Arena-Bench": "arena-bench:arena_bench_v1"}
PAIRS = {"RouteLLM MMLU": (GPT4, MIXTRAL), "RouteLLM GSM8K": (GPT4, MIXTRAL), "Arena-Bench": (GPT4, MIXTRAL)}
#: Where the shipped default's training data overlaps the held-out set (see default.json).
DEFAULT_SAW = {"RouterBench": "all of it", "MMLU-Pro": "its non-MMLU questions",
               "RouterDC": "its arc, cmmlu and humaneval files"}
#: (label, router spec, cap per training set or None, sets left out of training); the first is the shipped
#: recipe on the shipped default's sets (all of RouterDC's files, where the file used three of them): its
#: leave-one-out figures are the fair comparison for the others.
CANDIDATES = [("shipped sets (RouterBench, MMLU-Pro, all of RouterDC)", "irt", None,
               frozenset({"RouteLLM MMLU", "RouteLLM GSM8K", "LLMRouter", "Arena-Bench"})),
              ("every set", "irt", None, frozenset()),
              ("every set but LLMRouter", "irt", None, frozenset({"LLMRouter"})),
              ("rank 0", "irt:rank=0", None, frozenset()),
              ("rank 0, cap 4000", "irt:rank=0", 4000, frozenset()),
              ("rank 8, rich features, cap 4000", "irt:rank=8,features=price+tier+size+instruct+specialty+scores", 4000,
               frozenset())]
ARENA_FOLDS = 5


def load(name: str, embedder) -> tuple[RoutingDataset, np.ndarray]:
    kind, path = SETS[name].split(":", 1)
    data = load_dataset(f"{kind}:{shared_data_dir() / path}")
    return data, embedder.embed(data.prompts, progress=True)


def capped(data: RoutingDataset, emb: np.ndarray, cap: int | None) -> tuple[RoutingDataset, np.ndarray]:
    if cap is None or data.n_queries <= cap:
        return data, emb
    rows = np.sort(np.random.default_rng(0).choice(data.n_queries, cap, replace=False))
    return data.subset(rows), emb[rows]


def training_set(sets: dict, names: list[str], cap: int | None, test_prompts: list[str]):
    """The named sets (each capped), minus questions that recur in ``test_prompts``; and how many were removed."""
    parts = [capped(*sets[name], cap) for name in names]
    train, emb = combine([p[0] for p in parts]), np.vstack([p[1] for p in parts])
    repeated = overlap(train.prompts, test_prompts)
    return train.subset(~repeated), emb[~repeated], int(repeated.sum())


def scores(quality: np.ndarray | None, win: np.ndarray | None, train: RoutingDataset, test: RoutingDataset,
           pair) -> dict:
    """APGR (pairs) and pool metrics of predictions on ``test``, with expected costs fitted on ``train``."""
    out = {}
    if pair is not None and win is not None:
        strong, weak = (test.quality[:, test.model_index(m)] for m in pair)
        rows = np.isfinite(strong) & np.isfinite(weak)
        out.update(metrics.strong_weak_metrics(win[rows], strong[rows], weak[rows]))
    if quality is not None:
        multi = metrics.multi_model_metrics(quality, expected_costs(train, test), test.quality, test.cost_usd)
        out.update({k: v for k, v in multi.items() if not isinstance(v, np.ndarray)})
    return out


def shipped_default(train: RoutingDataset, test: RoutingDataset, test_emb: np.ndarray, pair) -> dict:
    from crossroads.routers import load_router

    router = load_router("default")
    new = [model for model in test.models if model.name not in router.models_]
    if new:
        router.add_models(new)
    cols = [router.model_column(name) for name in test.model_names]
    quality = router.predict(test_emb, test.prompts, test.categories)[:, cols]
    win = router.win_probability(test_emb, *pair, prompts=test.prompts) if pair else None
    return scores(quality, win, train, test, pair)


def summary(result: dict, best_single: float, pair) -> str:
    if pair:
        return f"APGR {cell(result.get('apgr'))}, AIQ {cell(result.get('aiq'))}"
    return (f"AIQ {cell(result.get('aiq'))}, cost@95% {cell(result.get('cost_share_at_95'), percent=True)}, "
            f"best {cell(result['best_quality'] / best_single, percent=True)}")


def leave_one_dataset_out(sets: dict, candidates: list, embedder: str) -> tuple[list[dict], Table]:
    rows = []
    table = Table("Leave one dataset out: candidates for the default router, trained on the other sets",
                  ["held out", "models", "candidate", "training queries (removed)", "candidate's result",
                   "shipped default", "random"])
    for held_out, (test, test_emb) in sets.items():
        pair = PAIRS.get(held_out)
        best_single = float(np.nanmax(np.nanmean(test.quality, axis=0)))
        for label, spec, cap, left_out in candidates:
            started = time.perf_counter()
            others = [name for name in sets if name != held_out and name not in left_out]
            train, train_emb, removed = training_set(sets, others, cap, test.prompts)
            run = evaluate([spec], train, train_emb, test=(test, test_emb), pair=pair, embedder=embedder)
            entries = {entry.name: entry.metrics for entry in run.entries}
            router, random = entries[spec], entries["random"]
            default = shipped_default(train, test, test_emb, pair)
            keys = ("apgr", "cpt50", "aiq", "best_quality", "cost_share_at_95")
            row = {"held_out": held_out, "candidate": label, "spec": spec, "cap": cap, "models": test.n_models,
                   "training_queries": train.n_queries, "removed": removed,
                   "seconds": time.perf_counter() - started, "best_single_model_quality": best_single,
                   "default_saw_held_out": DEFAULT_SAW.get(held_out),
                   **{f"candidate_{k}": router.get(k) for k in keys}, **{f"default_{k}": default.get(k) for k in keys},
                   **{f"random_{k}": random.get(k) for k in keys}}
            rows.append(row)
            print({k: v for k, v in row.items() if v is not None}, flush=True)
            saw = f" (saw {DEFAULT_SAW[held_out]})" if held_out in DEFAULT_SAW else ""
            table.add(held_out, str(test.n_models), label, f"{train.n_queries} ({removed})",
                      summary(router, best_single, pair), summary(default, best_single, pair) + saw,
                      summary(random, best_single, pair))
    table.notes.append("APGR for the GPT-4-1106/Mixtral-8x7B pair (higher is better); AIQ, the area under the "
                       "cost-quality curve (higher is better; '-' where every model costs the same, as in RouterDC, "
                       "which has no prices); cost@95% = share of the best single model's cost needed for 95% of "
                       "its quality ('-' = never reached); best = highest mean quality on the cost sweep as a share "
                       "of the best single model's.  'cap N' = at most N queries of each training set.")
    table.notes.append("The shipped default was trained on RouterBench, MMLU-Pro and RouterDC's arc/cmmlu/humaneval "
                       "files (MMLU and GSM8K questions removed): where it saw the held-out set, its figure is not a "
                       "held-out one; the 'shipped sets' rows are.")
    return rows, table


def arena_in_training(sets: dict, candidates: list, embedder: str) -> tuple[list[dict], Table]:
    """Pair APGR on Arena-Bench by 5-fold cross-validation, with and without the other folds in training."""
    test_all, emb_all = sets["Arena-Bench"]
    folds = np.random.default_rng(0).permutation(test_all.n_queries) % ARENA_FOLDS
    strong, weak = (test_all.quality[:, test_all.model_index(m)] for m in (GPT4, MIXTRAL))
    rows, table = [], Table(f"Chat data in training: Arena-Bench pair APGR, {ARENA_FOLDS}-fold cross-validation",
                            ["candidate", "without Arena-Bench", "with the other folds"])
    for label, spec, cap, left_out in candidates:
        wins = {False: np.empty(test_all.n_queries), True: np.empty(test_all.n_queries)}
        started = time.perf_counter()
        others = [name for name in sets if name != "Arena-Bench" and name not in left_out]
        for fold in range(ARENA_FOLDS):
            test_rows = folds == fold
            test, test_emb = test_all.subset(test_rows), emb_all[test_rows]
            base, base_emb, _ = training_set(sets, others, cap, test.prompts)
            for with_arena in (False, True):
                train, train_emb = base, base_emb
                if with_arena:
                    train = combine([base, test_all.subset(~test_rows)])
                    train_emb = np.vstack([base_emb, emb_all[~test_rows]])
                router = ROUTERS.build(ROUTERS.spec(spec)).fit(train, train_emb, embedder=embedder)
                router.add_models([m for m in test.models if m.name not in router.models_])
                wins[with_arena][test_rows] = router.win_probability(test_emb, GPT4, MIXTRAL, prompts=test.prompts)
        both = np.isfinite(strong) & np.isfinite(weak)
        found = {w: metrics.strong_weak_metrics(wins[w][both], strong[both], weak[both])["apgr"] for w in wins}
        rows.append({"candidate": label, "spec": spec, "cap": cap, "apgr_without_arena": found[False],
                     "apgr_with_arena": found[True], "seconds": time.perf_counter() - started})
        print(rows[-1], flush=True)
        table.add(label, cell(found[False]), cell(found[True]))
    table.notes.append("Each fold's 60 prompts are scored by a router trained on its sets, without or with "
                       "the other 240 Arena-Bench prompts; APGR over the 300 pooled predictions.")
    return rows, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="lodo,arena")
    parser.add_argument("--candidates", default=None,
                        help="comma-separated indices into CANDIDATES for lodo (default: all)")
    parser.add_argument("--arena-candidates", default="0,1,4", help="indices into CANDIDATES for the arena part")
    args = parser.parse_args()
    parts = args.parts.split(",")
    candidates = CANDIDATES if args.candidates is None else [CANDIDATES[int(k)] for k in args.candidates.split(",")]
    missing = missing_data([shared_data_dir() / spec.split(":", 1)[1] for spec in SETS.values()])
    if missing:
        print(skip_message(missing))
        return
    embedder = make_embedder()
    started = time.perf_counter()
    sets = {name: load(name, embedder) for name in SETS}
    results, tables = {"machine": machine(), "load_seconds": time.perf_counter() - started,
                       "candidates": [{"label": c[0], "spec": c[1], "cap": c[2], "left_out": sorted(c[3])}
                                      for c in candidates]}, []
    arena_candidates = [CANDIDATES[int(k)] for k in args.arena_candidates.split(",")]
    run_parts(parts, {"lodo": lambda: leave_one_dataset_out(sets, candidates, embedder.name),
                      "arena": lambda: arena_in_training(sets, arena_candidates, embedder.name)}, results, tables)
    write_results("default_router", results, "The default router: which recipe, trained on which sets",
                  ["`python benchmarks/default_router.py` on the shared data; embeddings: all-MiniLM-L6-v2 (int8 ONNX)."],
                  tables)


if __name__ == "__main__":
    main()
