"""The neural routers on this CPU: training speed, routing latency, file size and APGR on one held-out split.

Run from the repository root (needs the ``bert`` and ``causal-llm`` extras)::

    python benchmarks/neural_routers.py                       # about 20 minutes
    python benchmarks/neural_routers.py --routers bert,ridge  # about 4 minutes

RouteLLM's GSM8K outcomes (GPT-4-1106 vs Mixtral-8x7B), one seeded 80/20 split (not
the 5-fold table of ``routellm_table.py``: fine-tuning five folds takes too long for a
routine run).  bert fine-tunes all-MiniLM-L6-v2 for ``--bert-epochs``; causal_llm
fine-tunes LoRA adapters on gemma-3-270m for ``--causal-epochs``; knn and ridge are
fitted on the same split for comparison.  Reports training examples/s (an example is a
query for bert, a (query, model) prompt for causal_llm), fit time, p50 routing latency
for one prompt, the saved file's size, and APGR / CPT(50%) on the held-out 20%.  Writes
``benchmarks/results/neural_routers.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from crossroads.data.importers import load_dataset
from crossroads.embeddings import make_embedder
from crossroads.evaluate.metrics import strong_weak_metrics
from crossroads.paths import shared_data_dir
from crossroads.routers import make_router

RESULTS = Path(__file__).parent / "results"
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", default="bert,causal_llm,knn,ridge")
    parser.add_argument("--bert-epochs", type=int, default=2)
    parser.add_argument("--causal-epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    path = shared_data_dir() / "routellm" / "gsm8k"
    if not path.exists():
        print(f"skipped: no RouteLLM GSM8K data at {path}")
        return
    dataset = load_dataset(f"routellm-gsm8k:{path}")
    order = np.random.default_rng(0).permutation(dataset.n_queries)
    test_mask = np.zeros(dataset.n_queries, dtype=bool)
    test_mask[order[: dataset.n_queries // 5]] = True
    train, test = dataset.subset(~test_mask), dataset.subset(test_mask)
    embedder = make_embedder()
    train_emb, test_emb = embedder.embed(train.prompts), embedder.embed(test.prompts)
    strong, weak = test.model_names.index(STRONG), test.model_names.index(WEAK)
    results: dict = {"machine": {"cores": os.cpu_count(), "load_average_start": os.getloadavg()},
                     "queries": {"train": train.n_queries, "test": test.n_queries}, "routers": {}}
    params = {"bert": {"epochs": args.bert_epochs}, "causal_llm": {"epochs": args.causal_epochs}}
    for spec in args.routers.split(","):
        started = time.perf_counter()
        router = make_router(spec, **params.get(spec, {})).fit(train, train_emb, embedder=embedder.name)
        fit_s = time.perf_counter() - started
        win = router.win_probability(test_emb, STRONG, WEAK, prompts=test.prompts)
        metrics = strong_weak_metrics(win, test.quality[:, strong], test.quality[:, weak])
        one = []
        for i in range(30):  # one prompt at a time, as a server routes
            started = time.perf_counter()
            router.win_probability(test_emb[i % test.n_queries][None, :], STRONG, WEAK,
                                   prompts=[test.prompts[i % test.n_queries]])
            one.append((time.perf_counter() - started) * 1e3)
        with tempfile.TemporaryDirectory() as work:
            size_mb = router.save(Path(work) / "router.npz").stat().st_size / 1e6
        entry = {"fit_s": fit_s, "apgr": metrics["apgr"], "cpt50": metrics["cpt50"],
                 "route_one_p50_ms": float(np.median(one[5:])), "file_mb": size_mb}
        if hasattr(router, "examples_per_s_"):
            entry["train_examples_per_s"] = router.examples_per_s_
            entry["epochs"] = router.epochs
        results["routers"][spec] = entry
        print(spec, json.dumps(entry))
    results["machine"]["load_average_end"] = os.getloadavg()
    lines = ["# Neural routers (`python benchmarks/neural_routers.py`)", "",
             f"RouteLLM GSM8K, GPT-4-1106 vs Mixtral-8x7B, one seeded split: {train.n_queries} training, "
             f"{test.n_queries} held-out queries; {results['machine']['cores']} cores, load average "
             f"{results['machine']['load_average_start'][0]:.2f} at start. Routing latency excludes the embedding "
             "(knn and ridge read a precomputed one; bert and causal_llm read the text).", "",
             "| router | APGR | CPT(50%) | fit s | route one prompt p50 ms | file MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for spec, e in results["routers"].items():
        lines.append(f"| {spec} | {e['apgr']:.3f} | {100 * e['cpt50']:.1f}% | {e['fit_s']:.0f} | "
                     f"{e['route_one_p50_ms']:.1f} | {e['file_mb']:.1f} |")
    bases = {"bert": "all-MiniLM-L6-v2 (examples: queries)", "causal_llm": "gemma-3-270m with LoRA (examples: query-model prompts)"}
    lines.append("")
    for spec, e in results["routers"].items():
        if "train_examples_per_s" in e:
            lines.append(f"- {spec} fine-tuned {bases.get(spec, spec)} for {e['epochs']} epoch(s) at "
                         f"{e['train_examples_per_s']:.1f} training examples/s on the CPU.")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "neural_routers.md").write_text(text)
    (args.out / "neural_routers.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
