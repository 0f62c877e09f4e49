"""Online learners replayed on pools from the shared data, against the online-learning targets.

Run from the repository root: ``python benchmarks/online_simulation.py`` (about 6 minutes;
``--quick`` about 2, written under ``results/quick/``).  Pools: RouterBench 4 models (real costs; latency estimated from each
recorded answer's length and the model's price tier), LLMRouter 9 models (costs from its
prices and token counts), MMLU-Pro 6 models (costs from a price table).  Every learner's
reward is the objective ``quality=1,cost=0.5`` (cost min-max scaled over the pool) unless a
section says otherwise.

Sections: 0. each pool, with what the best possible router could reach; 1. convergence of
PickLLM's learners within 200 queries; 2. session cost, quality and latency; 3. contextual
learners on a 5,000-query stream; 4. drift; 5. off-policy estimates.  Writes
``benchmarks/results/online_simulation.{json,md}`` and two PNGs; exits 0, each target's
check line says PASS or FAIL.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _shared import (
    RESULTS_DIR,
    Table,
    cell,
    machine,
    missing_data,
    skip_message,
    write_results,
)

from crossroads.paths import shared_data_dir

OBJECTIVE = "quality=1,cost=0.5"


@dataclass(frozen=True)
class Pool:
    name: str
    spec: str  # FORMAT:PATH under the shared data
    models: tuple[str, ...] | None  # None: every model of the dataset
    note: str

    def path(self) -> Path:
        return shared_data_dir() / self.spec.partition(":")[2]


POOLS = (
    Pool("routerbench-4", "routerbench:routerbench",
         ("gpt-4-1106-preview", "gpt-3.5-turbo-1106", "meta/llama-2-70b-chat", "mistralai/mistral-7b-chat"),
         "one model per tier (frontier, commercial mid-size, open 70B, open 7B), as PickLLM used four"),
    Pool("llmrouter-9", "llmrouter:llmrouter/dcrouter_train.json", None, "all 9 models, prices from default_llm.json"),
    Pool("mmlu-pro-6", "mmlu-pro:mmlu_pro/eval_results",
         ("gemini-1.5-pro-002", "Meta-Llama-3_1-70B-Instruct", "gemini-1.5-flash-002", "Meta-Llama-3_1-8B-Instruct",
          "Mixtral-8x7B-Instruct-v0.1", "Phi-3-mini-4k-instruct"),
         "the instruction-tuned models from frontier to 4B"),
)
PICKLLM = ("automaton:learning_rate=0.1", "qlearning:step_size=0.1")


class Report:
    """Check lines, tables and figures collected while the sections run."""

    def __init__(self) -> None:
        self.results: dict = {"objective": OBJECTIVE, "checks": {}}
        self.lines: list[str] = []
        self.tables: list[Table] = []

    def check(self, key: str, ok: bool, text: str) -> None:
        self.results["checks"][key] = {"pass": bool(ok), "text": text}
        self.lines.append(f"{'PASS' if ok else 'FAIL'}  {text}")
        print(self.lines[-1], flush=True)

    def table(self, table: Table) -> None:
        table.print()
        self.tables.append(table)


# -- 0. the pools ----------------------------------------------------------------------
def describe_pool(pool: Pool, data, report: Report) -> dict:
    """Per model: mean quality, cost, latency and reward; the gap to the runner-up; the best any router can do."""
    from crossroads.evaluate.latency import latency_matrix
    from crossroads.evaluate.simulate import replay_rewards

    rewards = replay_rewards(data, OBJECTIVE)
    latency = latency_matrix(data)
    mean_reward = rewards.mean(axis=0)
    order = np.argsort(-mean_reward)
    best, second = int(order[0]), int(order[1])
    table = Table(f"0. {pool.name}: {data.n_queries} queries, {pool.note}",
                  ["model", "quality", "cost (m$/query)", "latency (s)", "reward", "reward sd"])
    for j in order:
        table.add(data.model_names[j], cell(data.quality[:, j].mean()), cell(1e3 * data.cost_usd[:, j].mean()),
                  cell(latency[:, j].mean(), digits=2), cell(mean_reward[j]), cell(rewards[:, j].std(), digits=2))
    gap = float(mean_reward[best] - mean_reward[second])
    sd = float(rewards[:, best].std())
    bound = best_possible_latency(data, latency)
    separate = samples_to_separate(gap, sd, float(rewards[:, second].std()))
    if bound["feasible"]:
        reach = (f"per-query oracle (a router that knows every outcome in advance), keeping >= 95% of the dearest "
                 f"model's quality at <= 40% of its cost: mean latency at best "
                 f"{bound['latency_reduction_vs_random']:.1%} below random selection")
    else:
        reach = "no routing keeps >= 95% of the dearest model's quality at <= 40% of its cost"
    table.notes += [
        (f"best model {data.model_names[best]}, {gap:.3f} above the runner-up; telling the two apart at 90% "
         f"confidence takes about {separate:.0f} answers of each"),
        reach,
        "latency: recorded where the data has it, else estimated (crossroads.evaluate.latency)",
    ]
    report.table(table)
    return {"best_model": data.model_names[best], "gap_to_second": gap, "best_reward_sd": sd,
            "mean_reward": dict(zip(data.model_names, mean_reward.tolist())), "oracle_bound": bound}


def samples_to_separate(gap: float, sd_a: float, sd_b: float, z: float = 1.2816) -> float:
    """Answers per model for a one-sided 90% test to tell two means ``gap`` apart (normal approximation)."""
    return float((z * (sd_a + sd_b) / gap) ** 2) if gap > 0 else float("inf")


def best_possible_latency(data, latency: np.ndarray) -> dict:
    """The lowest mean latency of any per-query choice with >= 95% of the dearest's quality at <= 40% of its cost.

    A linear programme over choice probabilities, one row per query: the bound no router
    can pass on this data, since it assumes every outcome is known in advance.
    """
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, identity, kron

    from crossroads.evaluate.simulate import most_expensive_model

    n, m = data.quality.shape
    dearest = most_expensive_model(data.cost_usd.mean(axis=0), data.quality.mean(axis=0))
    quality_goal = 0.95 * data.quality[:, dearest].mean()
    cost_goal = 0.40 * data.cost_usd[:, dearest].mean()
    choose_one = kron(identity(n), np.ones((1, m)), format="csr")  # sum_j x_ij = 1
    upper = csr_matrix(np.vstack([-data.quality.ravel() / n, data.cost_usd.ravel() / n]))
    solved = linprog(latency.ravel() / n, A_ub=upper, b_ub=[-quality_goal, cost_goal], A_eq=choose_one,
                     b_eq=np.ones(n), bounds=(0, 1), method="highs")
    random_latency = float(latency.mean())
    if not solved.success:
        return {"feasible": False, "latency_reduction_vs_random": None}
    return {"feasible": True, "mean_latency_s": float(solved.fun), "random_latency_s": random_latency,
            "latency_reduction_vs_random": 1.0 - float(solved.fun) / random_latency}


# -- 1. convergence ----------------------------------------------------------------------
def convergence(pool: Pool, data, best_model: str, seeds: int, report: Report) -> dict:
    """Share of seeds in which a sticky learner locks on the best model within 200 queries."""
    from crossroads.evaluate.simulate import simulate

    specs = [*PICKLLM, "automaton:learning_rate=0.03", "automaton:learning_rate=0.01", "qlearning:step_size=0.03"]
    table = Table(f"1. convergence on {pool.name} (one session, {seeds} seeds, 1,000 queries each)",
                  ["learner", "converged <= 200", "to the best model", "both", "median convergence query"])
    best = data.model_names.index(best_model)
    out = {}
    for spec in specs:
        steps, right = [], []
        for seed in range(seeds):
            entry = simulate(data, [spec], OBJECTIVE, queries=1000, seed=seed, sessions="none").entries[0]
            step = entry.metrics["convergence_step"]
            steps.append(step)
            after = entry.model_trace[int(step):] if np.isfinite(step) else entry.model_trace[-100:]
            right.append(np.bincount(after, minlength=data.n_models).argmax() == best)
        steps, right = np.array(steps), np.array(right)
        within = np.isfinite(steps) & (steps <= 200)
        out[spec] = {"within_200": within.mean(), "right_model": right.mean(), "both": (within & right).mean(),
                     "median_step": float(np.nanmedian(steps)) if np.isfinite(steps).any() else None}
        table.add(spec, cell(within.mean(), True), cell(right.mean(), True), cell((within & right).mean(), True),
                  cell(out[spec]["median_step"], digits=0))
    table.notes.append(f"best model in expectation: {best_model} (section 0)")
    report.table(table)
    for spec in PICKLLM:
        both = out[spec]["both"]
        report.check(f"converge {spec}", both >= 0.9,
                     f"{spec} on {pool.name}: {both:.0%} of {seeds} seeds converge to {best_model} within 200 queries "
                     "(target >= 90%)")
    return out


# -- 2. cost, quality, latency -----------------------------------------------------------
def cost_quality_latency(pool: Pool, data, embeddings, queries: int, seeds: int, report: Report):
    """PickLLM's comparisons: session cost against the dearest model, latency against random, quality kept.

    Returns the metrics per entry and the simulation (for its plot).
    """
    from crossroads.evaluate.simulate import simulate

    learners = [*PICKLLM, "ucb", "thompson", "linucb:exploration=0.1"]
    result = simulate(data, learners, OBJECTIVE, queries=queries, seeds=seeds, sessions="category",
                      embeddings=embeddings)
    table = Table(f"2. {pool.name}: {result.setup['queries']} queries, sessions by category, {seeds} seeds",
                  ["entry", "cost vs dearest", "quality kept", "latency vs random", "mean reward", "converged at"])
    for entry in result.entries:
        m = entry.metrics
        table.add(entry.name, cell(-m["cost_reduction_vs_most_expensive"], True), cell(m["quality_retained"], True),
                  cell(-m["latency_reduction_vs_random"], True), cell(m["mean_reward"]),
                  cell(m["convergence_step"], digits=0))
    table.notes.append("cost and latency as a change: -60% is 60% below the reference")
    report.table(table)
    for entry in result.entries[: len(learners)]:
        m = entry.metrics
        cost, quality, speed = m["cost_reduction_vs_most_expensive"], m["quality_retained"], m["latency_reduction_vs_random"]
        ok = cost >= 0.6 and quality >= 0.95 and speed >= 0.52
        report.check(f"cost-quality-latency {pool.name} {entry.name}", ok,
                     f"{entry.name} on {pool.name}: cost {-cost:+.0%} vs dearest (target <= -60%), quality kept "
                     f"{quality:.1%} (>= 95%), latency {-speed:+.0%} vs random (<= -52%)")
    return {entry.name: entry.metrics for entry in result.entries}, result


# -- 3. contextual -------------------------------------------------------------------------
def contextual(pool: Pool, data, embeddings, seeds: int, report: Report, queries: int = 5000) -> dict:
    """Contextual learners on a stream of distinct queries, from scratch and warm-started.

    The warm start is a knn router fitted on the queries left out of the stream (a small
    labelled set), so the stream's outcomes are never seen before they are routed.
    """
    from crossroads.evaluate.simulate import simulate
    from crossroads.online import make_learner
    from crossroads.routers import make_router

    order = np.random.default_rng(0).permutation(data.n_queries)
    stream_rows, labelled = order[:queries], order[queries:]
    prior = make_router("knn").fit(data.subset(labelled), embeddings[labelled])
    stream, stream_embeddings = data.subset(stream_rows), embeddings[stream_rows]

    def warm(name: str, exploration: float):
        def factory(seed: int):
            return make_learner(name, exploration=exploration, seed=seed).warm_start(prior)

        factory.__name__ = f"{name}:exploration={exploration} + knn warm start"
        return factory

    learners = ["linucb:exploration=1.0", "linucb:exploration=0.1", "lints:exploration=0.1",
                warm("linucb", 0.1), warm("linucb", 0.02), warm("lints", 0.02)]
    out = {}
    for objective in ("quality=1,cost=0.5", "quality=1,cost=0.1"):
        table = Table(f"3. contextual learners on {pool.name}, objective {objective}: {queries} distinct queries, "
                      f"warm start from knn fitted on the other {len(labelled)}, {seeds} seeds",
                      ["learner", "cumulative reward", "vs best fixed", "quality", "cost (m$/query)"])
        rows = {}
        for learner in learners:  # one simulation each: the warm-started factories share a learner name
            result = simulate(stream, [learner], objective, seeds=seeds, sessions="none", embeddings=stream_embeddings)
            rows[learner if isinstance(learner, str) else learner.__name__] = result.entries[0].metrics
        best_fixed = result["best_fixed"].metrics  # the same streams for every learner
        rows["best_fixed"] = best_fixed
        rows["oracle"] = result["oracle"].metrics
        for label, m in rows.items():
            table.add(label, cell(m["cumulative_reward"], digits=1), cell(m["cumulative_reward"] / best_fixed["cumulative_reward"] - 1, True),
                      cell(m["mean_quality"]), cell(1e3 * m["total_cost_usd"] / queries))
        table.notes.append("exploration values are a grid, reported in full; the best was not chosen on held-out data")
        report.table(table)
        scored = {k: v for k, v in rows.items() if k not in ("best_fixed", "oracle")}
        top = max(scored, key=lambda k: scored[k]["cumulative_reward"])
        gain = scored[top]["cumulative_reward"] / best_fixed["cumulative_reward"] - 1
        report.check(f"contextual {objective}", gain >= 0.05,
                     f"best contextual learner on {pool.name} ({objective}): {top}, cumulative reward {gain:+.1%} "
                     "vs the best fixed model in hindsight (target >= +5%)")
        out[objective] = rows
    return out


# -- 4. drift -------------------------------------------------------------------------------
def drift(pool: Pool, data, best_model: str, seeds: int, report: Report) -> dict:
    """The best model's quality drops (or its price rises) at query 2,000; reward 500-1,000 queries later."""
    from crossroads.evaluate.simulate import Drift, simulate

    adaptive = ["ucb:discount=0.99", "ucb:window=500", "thompson:discount=0.99",
                "qlearning:step_size=0.1,sticky=False"]
    reference = ["ucb", "thompson", "automaton:learning_rate=0.1"]
    at, window = 2000, slice(2500, 3000)
    out = {}
    for scenario, change in (("quality -0.3", Drift(at, best_model, quality_delta=-0.3)),
                             ("price x10", Drift(at, best_model, cost_factor=10.0))):
        earned = {spec: [] for spec in adaptive + reference}
        new_best = []
        for seed in range(seeds):
            result = simulate(data, adaptive + reference, OBJECTIVE, queries=4000, seed=seed, sessions="none", drift=change)
            after = result.rewards[at:]
            j = int(np.nanargmax(np.nanmean(after, axis=0)))  # the best model once the drift happened
            new_best.append(np.nanmean(result.rewards[window, j]))
            for spec, entry in zip(adaptive + reference, result.entries):
                earned[spec].append(entry.reward_trace[window].mean())
        target = float(np.mean(new_best))
        table = Table(f"4. drift on {pool.name}: {best_model} {scenario} at query {at} ({seeds} seeds, 4,000 queries)",
                      ["learner", "mean reward, queries 2,500-3,000", "vs the new best model"])
        for spec, values in earned.items():
            table.add(spec, cell(float(np.mean(values))), cell(float(np.mean(values)) / target - 1, True))
        table.notes.append(f"the new best model earns {target:.3f} over the same queries; the last three rows "
                           "do not forget (reference)")
        report.table(table)
        for spec in adaptive if change.quality_delta else []:  # the target is set for a drop in quality
            value = float(np.mean(earned[spec]))
            report.check(f"drift {scenario} {spec}", value >= 0.95 * target,
                         f"{spec}, {best_model} {scenario} at query {at}: {value / target - 1:+.1%} vs the new best "
                         "model 500-1,000 queries later (target >= -5%)")
        out[scenario] = {"new_best_reward": target, **{spec: float(np.mean(v)) for spec, v in earned.items()}}
    return out


def pool_changes(pool: Pool, data, best_model: str, report: Report) -> dict:
    """The best model leaves the pool at query 1,000, or joins it there; no target, reported for the record."""
    from crossroads.evaluate.simulate import simulate

    learners = [*PICKLLM, "ucb:discount=0.99", "thompson:discount=0.99"]
    table = Table(f"4b. {best_model} leaves or joins {pool.name} at query 1,000 (2,000 queries, one stream)",
                  ["learner", "mean reward after it leaves", "after it joins"])
    removed = simulate(data, learners, OBJECTIVE, queries=2000, sessions="none", remove_at={best_model: 1000})
    added = simulate(data, learners, OBJECTIVE, queries=2000, sessions="none", add_at={best_model: 1000})
    out = {}
    for k, spec in enumerate(learners):
        left, joined = removed.entries[k].reward_trace[1000:].mean(), added.entries[k].reward_trace[1000:].mean()
        out[spec] = {"after_leave": float(left), "after_join": float(joined)}
        table.add(spec, cell(left), cell(joined))
    best_left = float(np.nanmax(np.nanmean(removed.rewards[1000:], axis=0)))
    best_joined = float(np.nanmax(np.nanmean(added.rewards[1000:], axis=0)))
    table.add("best single model after", cell(best_left), cell(best_joined))
    table.notes.append("a sticky learner converged to the model that leaves starts learning again among the rest")
    report.table(table)
    return out


# -- 5. off-policy ------------------------------------------------------------------------
def off_policy(pool: Pool, data, report: Report) -> dict:
    """Estimate other policies' value from a Q-learning log, against their true replayed value."""
    from crossroads.evaluate import off_policy as ope
    from crossroads.evaluate.simulate import replay_rewards
    from crossroads.online import make_learner

    rewards = replay_rewards(data, OBJECTIVE)
    m = rewards.shape[1]
    logger = make_learner("qlearning", step_size=0.1, epsilon=0.2, sticky=False, seed=0)
    log = ope.replay_log(rewards, logger, np.random.default_rng(0), passes=5, models=data.model_names)
    k = len(log)
    categories = np.array(data.categories)
    logged_categories = categories[log.rows]
    per_category_best = np.zeros((k, m))
    for category in set(logged_categories):
        best_here = int(np.argmax(rewards[categories == category].mean(axis=0)))
        per_category_best[logged_categories == category, best_here] = 1.0
    targets = {f"always {name}": ope.fixed_policy(k, m, j) for j, name in enumerate(data.model_names)}
    targets["uniform random"] = ope.uniform_policy(k, m)
    targets["best model per category"] = per_category_best
    reward_model = np.tile(ope.mean_reward_model(log.actions, log.rewards, m), (k, 1))
    table = Table(f"5. off-policy estimates on {pool.name}: {k} logged decisions of Q-learning (epsilon 0.2)",
                  ["target policy", "true value", "IPS", "SNIPS", "doubly robust", "worst error"])
    out = {}
    for name, policy in targets.items():
        true = float((policy * rewards[log.rows]).sum(axis=1).mean())
        estimates = {
            "ips": ope.ips(log.actions, log.propensities, log.rewards, policy),
            "snips": ope.snips(log.actions, log.propensities, log.rewards, policy),
            "doubly_robust": ope.doubly_robust(log.actions, log.propensities, log.rewards, policy, reward_model),
        }
        worst = max(abs(v / true - 1) for v in estimates.values())
        out[name] = {"true": true, **estimates, "worst_error": worst}
        table.add(name, cell(true), *(cell(v) for v in estimates.values()), cell(worst, True))
        report.check(f"off-policy {name}", worst <= 0.1,
                     f"off-policy, {name} on {pool.name}: IPS, SNIPS and doubly robust within {worst:.1%} of the "
                     "true replayed value (target <= 10%)")
    report.table(table)
    return out


# -- main ---------------------------------------------------------------------------------
def load_pool(pool: Pool):
    from crossroads.data.importers import load_dataset
    from crossroads.embeddings import make_embedder

    data = load_dataset(f"{pool.spec.partition(':')[0]}:{pool.path()}")
    if pool.models is not None:
        data = data.select_models(list(pool.models))
    data = data.complete_rows()
    return data, make_embedder().embed(data.prompts, progress=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and queries (about 2 minutes)")
    args = parser.parse_args()
    missing = missing_data([pool.path() for pool in POOLS])
    if missing:
        print(skip_message(missing))
        return 0
    started, at_start = time.perf_counter(), machine()
    seeds = 2 if args.quick else 5
    out = RESULTS_DIR / "quick" if args.quick else RESULTS_DIR
    report = Report()
    loaded = {pool.name: load_pool(pool) for pool in POOLS}
    pools = {pool.name: pool for pool in POOLS}
    described = {name: describe_pool(pools[name], data, report) for name, (data, _) in loaded.items()}
    report.results["pools"] = described

    main_pool = pools["routerbench-4"]
    data = loaded[main_pool.name][0]
    best = described[main_pool.name]["best_model"]
    report.results["convergence"] = convergence(main_pool, data, best, 10 if args.quick else 40, report)

    report.results["cost_quality_latency"] = {}
    for name, (pool_data, pool_embeddings) in loaded.items():
        metrics, result = cost_quality_latency(pools[name], pool_data, pool_embeddings,
                                               min(pool_data.n_queries, 1000 if args.quick else 5000), seeds, report)
        report.results["cost_quality_latency"][name] = metrics
        if name == main_pool.name:
            from crossroads.evaluate.simulation_plots import plot_rewards

            plot_rewards(result, out / "online_simulation_rewards.png")

    context_pool = pools["llmrouter-9"]
    context_data, context_embeddings = loaded[context_pool.name]
    report.results["contextual"] = contextual(context_pool, context_data, context_embeddings,
                                              1 if args.quick else 3, report)
    report.results["drift"] = drift(main_pool, data, best, seeds, report)
    report.results["pool_changes"] = pool_changes(main_pool, data, best, report)
    report.results["off_policy"] = off_policy(main_pool, data, report)

    from crossroads.evaluate.simulation_plots import plot_convergence

    plot_convergence(data, "automaton", [0.01, 0.03, 0.1], out / "online_simulation_convergence.png",
                     objective=OBJECTIVE, queries=1000)
    report.results["machine_at_start"], report.results["machine_at_end"] = at_start, machine()
    report.results["run_seconds"] = time.perf_counter() - started
    print("\ntargets:")
    for line in report.lines:
        print("  " + line)
    command = f"python benchmarks/online_simulation.py{' --quick' if args.quick else ''}"
    intro = [(f"Objective {OBJECTIVE} unless a table says otherwise; `{command}`, "
              f"{report.results['run_seconds'] / 60:.0f} minutes."), "", *(f"- {line}" for line in report.lines)]
    write_results("online_simulation", report.results, "Online learners on replayed pools", intro, report.tables,
                  directory=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
