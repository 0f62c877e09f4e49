"""Routers on data they never saw: leave one dataset out, the pretrained default, new models with probes.

Run from the repository root::

    python benchmarks/generalisation.py            # about 15 min; embeddings cached after the first run
    python benchmarks/generalisation.py --parts default

Three parts (``--parts lodo,default,probes``):

* ``lodo``: for each shared dataset, train the ``irt`` router on all the others (training
  questions that recur in the held-out set removed by normalised text, counts reported)
  and score it on the held-out set, whose models it places by their descriptors.  Pairs
  report APGR, pools the share of the best single model's cost needed to match its
  quality, each against the random router.
* ``default``: the shipped pretrained router (``src/crossroads/pretrained/default.npz``,
  which saw neither MMLU nor GSM8K) on RouteLLM's MMLU and GSM8K pairs, against
  RouteLLM's published Arena-only results; the figures are also written into the
  router's provenance file.
* ``probes``: on MMLU-Pro, a model is left out of training, then joins with its
  descriptors and n probe outcomes; the pair APGR it reaches is compared with the router
  trained with all of that model's outcomes.

Writes ``benchmarks/results/generalisation.{json,md}``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _shared import Table, cell, machine, missing_data, run_parts, skip_message, write_results

from crossroads.data.dataset import combine
from crossroads.data.dedup import overlap
from crossroads.data.importers import load_dataset
from crossroads.embeddings import make_embedder
from crossroads.evaluate import metrics
from crossroads.evaluate.harness import evaluate
from crossroads.paths import shared_data_dir
from crossroads.routers import make_router

GPT4, MIXTRAL = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"
SETS = {
    "RouteLLM MMLU": "routellm-mmlu:routellm/mmlu",
    "RouteLLM GSM8K": "routellm-gsm8k:routellm/gsm8k",
    "RouterBench": "routerbench:routerbench",
    "MMLU-Pro": "mmlu-pro:mmlu_pro/eval_results",
    "LLMRouter": "llmrouter:llmrouter/dcrouter_train.json",
    "RouterDC": "routerdc:routerdc7",
}
PAIRS = {"RouteLLM MMLU": (GPT4, MIXTRAL), "RouteLLM GSM8K": (GPT4, MIXTRAL)}
#: RouteLLM's best published router trained on Chatbot Arena data only (paper, Table 2 and 3).
ROUTELLM_ARENA_ONLY = {"RouteLLM MMLU": 0.524, "RouteLLM GSM8K": 0.475}
LODO_ROUTERS = ["irt", "irt:features=price+tier+size+instruct+specialty+scores"]
#: (model left out of training, its partner in the pair) on MMLU-Pro.
PROBE_PAIRS = [("gemini-1.5-pro-002", "Meta-Llama-3_1-8B-Instruct"),
               ("Meta-Llama-3_1-70B-Instruct", "Mistral-7B-Instruct-v0.2"),
               ("Qwen1.5-72B-Chat", "Llama-2-13b-hf"),
               ("Mixtral-8x7B-Instruct-v0.1", "gemini-1.5-pro-002"),
               ("Phi-3-mini-4k-instruct", "Meta-Llama-3_1-70B-Instruct")]
PROBE_COUNTS = [0, 10, 25, 50, 100, 200, 400]
PROBE_SEEDS = 5


def load(name: str, embedder):
    kind, path = SETS[name].split(":", 1)
    data = load_dataset(f"{kind}:{shared_data_dir() / path}")
    return data, embedder.embed(data.prompts, progress=True)


def leave_one_dataset_out(sets: dict, embedder_name: str) -> tuple[list[dict], Table]:
    rows = []
    table = Table("Leave one dataset out (irt, trained on the other five sets)",
                  ["held out", "models", "training queries (removed)", "router", "router's result", "random"])
    for held_out, (test, test_emb) in sets.items():
        others = [name for name in sets if name != held_out]
        train = combine([sets[name][0] for name in others])
        train_emb = np.vstack([sets[name][1] for name in others])
        repeated = overlap(train.prompts, test.prompts)
        train, train_emb = train.subset(~repeated), train_emb[~repeated]
        pair = PAIRS.get(held_out)
        for label in LODO_ROUTERS:
            started = time.perf_counter()
            run = evaluate([label], train, train_emb, test=(test, test_emb), pair=pair,
                           embedder=embedder_name)
            entries = {entry.name: entry.metrics for entry in run.entries}
            router, random = entries[label], entries["random"]
            kept = ("apgr", "cpt50") if pair else ("cost_share_at_95", "cost_share_at_97", "cost_share_at_100", "aiq",
                                                   "best_quality")
            row = {"held_out": held_out, "router": label, "models": test.n_models, "training_queries": train.n_queries,
                   "removed": int(repeated.sum()), "seconds": time.perf_counter() - started,
                   **{f"router_{k}": router.get(k) for k in kept}, **{f"random_{k}": random.get(k) for k in kept},
                   "best_single_model_quality": max(e.metrics["mean_quality"] for e in run.entries if e.kind == "model")}
            rows.append(row)
            print(row, flush=True)
            if pair:
                shown = [f"APGR {cell(router['apgr'])}", cell(random["apgr"])]
            else:
                best = row["best_single_model_quality"]
                shown = [f"cost@95% {cell(entry.get('cost_share_at_95'), percent=True)}, AIQ {cell(entry['aiq'])}, "
                         f"best {cell(entry['best_quality'] / best, percent=True)}" for entry in (router, random)]
            table.add(held_out, str(test.n_models), f"{train.n_queries} ({int(repeated.sum())})", label, *shown)
    table.notes.append("APGR for the GPT-4/Mixtral pairs; for pools, the share of the best single model's cost "
                       "needed for 95% of its quality (lower is better; '-' = never reached on the cost sweep) and "
                       "AIQ, the area under the cost-quality curve (higher is better); 'best' = the highest mean "
                       "quality on the cost sweep as a share of the best single model's.")
    return rows, table


def default_router(sets: dict) -> tuple[list[dict], Table]:
    from crossroads.pretrained import default_router_path
    from crossroads.routers import load_router
    from crossroads.routers.provenance import add_metrics, read_provenance

    provenance = read_provenance(default_router_path())
    table = Table("Pretrained default router on benchmarks it never saw",
                  ["benchmark", "APGR", "CPT(50%)", "random APGR", "RouteLLM Arena-only APGR"])
    rows = []
    for name in ("RouteLLM MMLU", "RouteLLM GSM8K"):
        data, emb = sets[name]
        router = load_router("default").add_models([GPT4, MIXTRAL])
        win = router.win_probability(emb, GPT4, MIXTRAL, prompts=data.prompts)
        strong, weak = (data.quality[:, data.model_index(m)] for m in (GPT4, MIXTRAL))
        found = metrics.strong_weak_metrics(win, strong, weak)
        rng = np.random.default_rng(0)
        random = np.mean([metrics.strong_weak_metrics(rng.random(len(win)), strong, weak)["apgr"] for _ in range(10)])
        rows.append({"benchmark": name, "apgr": found["apgr"], "cpt50": found["cpt50"], "random_apgr": random,
                     "routellm_arena_only_apgr": ROUTELLM_ARENA_ONLY[name], "queries": data.n_queries})
        table.add(name, cell(found["apgr"]), cell(found["cpt50"], percent=True), cell(random),
                  cell(ROUTELLM_ARENA_ONLY[name]))
    add_metrics(default_router_path(), "unseen_benchmarks", {r["benchmark"]: {k: v for k, v in r.items() if k != "benchmark"}
                                                            for r in rows}, "python benchmarks/generalisation.py --parts default")
    table.notes.append(f"trained by: {provenance['command']}")
    table.notes.append(f"training data: {provenance['queries']} queries, {len(provenance['models'])} models; "
                       f"{provenance['training_queries_removed']} training questions that recur in MMLU or GSM8K removed")
    return rows, table


def probes(sets: dict, embedder_name: str) -> tuple[list[dict], Table]:
    data, emb = sets["MMLU-Pro"]
    rng = np.random.default_rng(0)
    train_rows = rng.random(data.n_queries) < 0.5
    train, test = data.subset(train_rows), data.subset(~train_rows)
    train_emb, test_emb = emb[train_rows], emb[~train_rows]
    rows = []
    full = make_router("irt").fit(train, train_emb, embedder=embedder_name)  # every model's outcomes: the reference
    for new, partner in PROBE_PAIRS:
        without = train.select_models([m for m in train.model_names if m != new])
        base = make_router("irt").fit(without, train_emb, embedder=embedder_name)
        strong, weak = (new, partner) if np.nanmean(train.quality[:, train.model_index(new)]) >= np.nanmean(
            train.quality[:, train.model_index(partner)]) else (partner, new)
        s, w = (test.quality[:, test.model_index(m)] for m in (strong, weak))
        both = np.isfinite(s) & np.isfinite(w)
        prompts = [p for p, keep in zip(test.prompts, both) if keep]

        def apgr(router, strong=strong, weak=weak, s=s[both], w=w[both], rows=both, prompts=prompts) -> float:
            win = router.win_probability(test_emb[rows], strong, weak, prompts)
            return metrics.strong_weak_metrics(win, s, w)["apgr"]

        full_apgr = apgr(full)
        by_count = {}
        for n in PROBE_COUNTS:
            values = []
            for seed in range(PROBE_SEEDS if n else 1):
                picks = np.random.default_rng(seed).choice(train.n_queries, n, replace=False) if n else None
                joined = [train.models[train.model_index(new)]]
                if n:  # placing the model again replaces its earlier placement
                    base.add_models(joined, train.subset(picks), train_emb[picks])
                else:
                    base.add_models(joined)
                values.append(apgr(base))
            by_count[n] = float(np.mean(values))
        share = {n: (v - 0.5) / (full_apgr - 0.5) if full_apgr > 0.5 else float("nan") for n, v in by_count.items()}
        needed = next((n for n in PROBE_COUNTS if share[n] >= 0.9), None)
        rows.append({"new_model": new, "partner": partner, "strong": strong, "full_data_apgr": full_apgr,
                     "apgr_by_probes": by_count, "share_of_full_gain": share, "probes_for_90pct": needed})
        print(rows[-1], flush=True)
    table = Table("A new model joins with its descriptors and n probe outcomes (MMLU-Pro, irt)",
                  ["new model (pair partner)", "full data APGR", *[f"n={n}" for n in PROBE_COUNTS], "n for 90%"])
    for row in rows:
        table.add(f"{row['new_model']} ({row['partner']})", cell(row["full_data_apgr"]),
                  *[cell(row["apgr_by_probes"][n]) for n in PROBE_COUNTS],
                  str(row["probes_for_90pct"]) if row["probes_for_90pct"] is not None else f"> {PROBE_COUNTS[-1]}")
    table.notes.append(f"APGR of the pair on {test.n_queries} held-out queries; the router trained on the other "
                       f"{train.n_queries} queries without the new model, probes drawn from those queries "
                       f"(mean of {PROBE_SEEDS} draws); 'n for 90%' = fewest probes reaching 90% of the full-data "
                       "APGR gain over random (0.5).")
    return rows, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="lodo,default,probes")
    args = parser.parse_args()
    parts = args.parts.split(",")
    root = shared_data_dir()
    missing = missing_data([root / spec.split(":", 1)[1] for spec in SETS.values()])
    if missing:
        print(skip_message(missing))
        return
    embedder = make_embedder()
    needed = list(SETS) if "lodo" in parts else (["RouteLLM MMLU", "RouteLLM GSM8K"] if "default" in parts else [])
    if "probes" in parts and "MMLU-Pro" not in needed:
        needed.append("MMLU-Pro")
    sets = {name: load(name, embedder) for name in needed}
    results, tables = {"machine": machine()}, []
    run_parts(parts, {"lodo": lambda: leave_one_dataset_out(sets, embedder.name),
                      "default": lambda: default_router(sets),
                      "probes": lambda: probes(sets, embedder.name)}, results, tables)
    write_results("generalisation", results, "Generalisation: unseen datasets, unseen benchmarks, new models",
                  ["`python benchmarks/generalisation.py` on the shared data; embeddings: all-MiniLM-L6-v2 (int8 ONNX)."],
                  tables)


if __name__ == "__main__":
    main()
