"""What the routing server adds: latency over calling the upstream directly, and throughput.

Run from the repository root::

    python benchmarks/serve_overhead.py            # about 2 minutes (--no-local-model: 1 minute)

Three processes on loopback: an upstream that answers instantly (crossroads' fake
OpenAI-compatible server), ``crossroads serve`` in front of it, and this script as the
client.  Requests alternate between the upstream directly and crossroads' routes, one
at a time on kept-alive connections, so both see the same machine load; the added
latency is p50(through crossroads) - p50(direct), and the same at p99.  Routes:

* ``learner``: Thompson sampling over two models (no embedding);
* ``router``: a knn router file over all-MiniLM-L6-v2 embeddings of the prompt (int8 ONNX);
* a model named directly (pass-through).

Throughput: ``--concurrency`` connections send requests through the ``learner`` route
for ``--seconds``; routed requests per second.  The load comes from ``wrk`` when it is
installed (Debian package wrk: it costs the machine little CPU), else from asyncio
clients in this process, which take CPU from the server on a 2-core machine.  Then, unless
``--no-local-model``, requests through crossroads to a real model (gemma-3-270m on
llama.cpp, at most 16 tokens per answer): the share of end-to-end time spent in crossroads
(see ``local_model_share`` for how it is read).
Targets: p50 added <= 5 ms (no embedding), <= 20 ms (embedding); >= 300 routed
requests/s.  Writes ``benchmarks/results/serve_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from crossroads.upstream.servers import free_port

RESULTS = Path(__file__).parent / "results"
PROMPTS = ["What is {a} times {b}?", "Write a haiku about {w}.", "Explain {w} to a child.",
           "Translate '{w}' into French.", "Is {a} a prime number?", "Summarise the history of {w}."]
WORDS = ["rivers", "tax law", "photosynthesis", "jazz", "volcanoes", "chess", "bread", "the moon"]


def wait_up(url: str, process: subprocess.Popen, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited during start-up")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {timeout_s:g} s")


def prompt(i: int) -> str:
    rng = np.random.default_rng(i)
    template = PROMPTS[i % len(PROMPTS)]
    return template.format(a=int(rng.integers(2, 999)), b=int(rng.integers(2, 99)), w=WORDS[int(rng.integers(len(WORDS)))])


def train_router(path: Path) -> None:
    """A knn router over 2,000 real prompt embeddings (the quality labels are arbitrary: only speed matters here)."""
    from crossroads.data.dataset import ModelInfo, RoutingDataset
    from crossroads.embeddings import make_embedder
    from crossroads.routers import make_router

    prompts = [prompt(i) for i in range(2000)]
    rng = np.random.default_rng(0)
    dataset = RoutingDataset(query_ids=[f"q{i}" for i in range(len(prompts))], prompts=prompts,
                             categories=["bench"] * len(prompts), sources=["bench"] * len(prompts),
                             models=[ModelInfo("big", 10, 30), ModelInfo("small", 0.1, 0.3)],
                             quality=rng.integers(0, 2, (len(prompts), 2)).astype(float),
                             cost_usd=np.tile([1e-2, 1e-4], (len(prompts), 1)))
    embedder = make_embedder("minilm-onnx", cache=False)
    make_router("knn").fit(dataset, embedder.embed(prompts), embedder=embedder.name).save(path)


def start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)


def timed_pairs(targets: dict[str, tuple[str, str]], n: int, **fields) -> dict[str, np.ndarray]:
    """Per target (url, model): n request latencies in ms, the targets interleaved request by request."""
    clients = {name: httpx.Client(timeout=60) for name in targets}
    times: dict[str, list[float]] = {name: [] for name in targets}
    for i in range(n + 20):
        body_messages = [{"role": "user", "content": prompt(i)}]
        for name, (url, model) in targets.items():
            started = time.perf_counter()
            response = clients[name].post(url, json={"model": model, "messages": body_messages, "max_tokens": 16, **fields})
            elapsed_ms = (time.perf_counter() - started) * 1e3
            response.raise_for_status()
            if i >= 20:  # the first requests warm connections, caches and the embedder
                times[name].append(elapsed_ms)
    return {name: np.array(values) for name, values in times.items()}


async def throughput(url: str, model: str, concurrency: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < stop_at:
            response = await client.post(url, json={"model": model, "messages": [{"role": "user", "content": prompt(i)}]})
            response.raise_for_status()
            done += 1
            i += concurrency

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, k) for k in range(concurrency)))
        return done / (time.perf_counter() - started)


def wrk_throughput(url: str, model: str, concurrency: int, seconds: float, work: Path) -> float:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt(0)}]})
    script = work / f"post-{model}.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    done = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(script), url],
                          capture_output=True, text=True, check=True).stdout
    non_2xx = [line for line in done.splitlines() if "Non-2xx" in line]
    if non_2xx:
        raise SystemExit(f"wrk saw failed requests: {non_2xx[0]}")
    return float(next(line for line in done.splitlines() if line.startswith("Requests/sec:")).split()[1])


def measure_throughput(url: str, model: str, args: argparse.Namespace, work: Path) -> float:
    if shutil.which("wrk"):
        return wrk_throughput(url, model, args.concurrency, args.seconds, work)
    return asyncio.run(throughput(url, model, args.concurrency, args.seconds))


def summary(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="timed requests per target (default 500)")
    parser.add_argument("--seconds", type=float, default=15.0, help="throughput run length (default 15)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-local-model", action="store_true", help="skip the real-model comparison")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crossroads-bench-"))
    load_start = os.getloadavg()
    processes: list[subprocess.Popen] = []
    results: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                 "load_average_start": load_start}}
    try:
        upstream_port, crossroads_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{upstream_port}/v1"
        processes.append(start([sys.executable, "-m", "crossroads.upstream.fake", "--port", str(upstream_port)],
                               work / "upstream.log"))
        train_router(work / "knn.npz")
        models = [{"name": name, "base_url": upstream, "upstream_model": "echo", "price_per_mtok_in": price,
                   "price_per_mtok_out": 3 * price} for name, price in (("big", 10.0), ("small", 0.1))]
        config = {"models": models, "store": f"sqlite:///{work}/bench.db",
                  "routes": {"learner": {"learner": "thompson", "objective": "quality=1,cost=0.5"},
                             "router": {"router_file": str(work / "knn.npz"), "objective": "quality=1,cost=0.5"}}}
        (work / "bench.yaml").write_text(yaml.safe_dump(config))
        processes.append(start([sys.executable, "-m", "crossroads.cli.main", "serve", "--config",
                                str(work / "bench.yaml"), "--port", str(crossroads_port)], work / "crossroads.log"))
        wait_up(upstream.removesuffix("/v1") + "/v1/models", processes[0], "the fake upstream")
        crossroads = f"http://127.0.0.1:{crossroads_port}"
        wait_up(crossroads + "/health", processes[1], "crossroads serve")

        print(f"timing {args.requests} requests per target, interleaved ...", file=sys.stderr)
        chat = "/chat/completions"
        times = timed_pairs({"direct": (upstream + chat, "echo"),
                             "learner": (crossroads + "/v1" + chat, "learner"),
                             "router": (crossroads + "/v1" + chat, "router"),
                             "pass-through": (crossroads + "/v1" + chat, "small")}, args.requests)
        direct = summary(times["direct"])
        latency = {"direct": direct}
        for name in ("learner", "router", "pass-through"):
            s = summary(times[name])
            s["added_p50_ms"] = s["p50_ms"] - direct["p50_ms"]
            s["added_p99_ms"] = s["p99_ms"] - direct["p99_ms"]
            s["ratio_p50"] = s["p50_ms"] / direct["p50_ms"]
            latency[name] = s
        results["latency"] = latency

        print(f"throughput: {args.concurrency} concurrent clients for {args.seconds:g} s ...", file=sys.stderr)
        results["throughput"] = {
            "concurrency": args.concurrency, "seconds": args.seconds,
            "load_generator": "wrk" if shutil.which("wrk") else "python asyncio (install wrk for a lighter load)",
            "direct_rps": measure_throughput(upstream + chat, "echo", args, work),
            "learner_rps": measure_throughput(crossroads + "/v1" + chat, "learner", args, work),
        }
        if not args.no_local_model:
            results["local_model"] = local_model_share(work, processes, latency["learner"]["added_p50_ms"])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    results["machine"]["load_average_end"] = os.getloadavg()
    write(results, args.out)


def local_model_share(work: Path, processes: list[subprocess.Popen], added_p50_ms: float) -> dict:
    """The share of end-to-end time spent in crossroads, with gemma-3-270m on llama.cpp as the upstream.

    Comparing against direct calls is confounded here: llama.cpp reuses the KV cache of
    the previous identical prompt, so whichever path goes second is faster.  So the share
    is read two ways: crossroads' own time per request as the server records it
    (end-to-end at the client minus the upstream call's latency in the outcome), and the
    added p50 measured against the instant upstream divided by the real end-to-end p50.
    """
    from crossroads.store import open_store
    from crossroads.upstream.local_model import LocalModelServer

    print("real model: starting gemma-3-270m on llama.cpp ...", file=sys.stderr)
    with LocalModelServer() as local:
        port = free_port()
        config = {"models": [{"name": "gemma", "base_url": local.base_url, "upstream_model": local.model,
                              "timeout_s": 120}],
                  "routes": {"learner": {"learner": "thompson"}}, "store": f"sqlite:///{work}/local.db"}
        (work / "local.yaml").write_text(yaml.safe_dump(config))
        server = start([sys.executable, "-m", "crossroads.cli.main", "serve", "--config", str(work / "local.yaml"),
                        "--port", str(port)], work / "crossroads-local.log")
        processes.append(server)
        wait_up(f"http://127.0.0.1:{port}/health", server, "crossroads serve (local model)")
        end_to_end_ms, decisions = [], []
        with httpx.Client(timeout=120) as client:
            for i in range(25):
                started = time.perf_counter()
                response = client.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                       json={"model": "learner", "max_tokens": 16, "temperature": 0,
                                             "messages": [{"role": "user", "content": prompt(i)}]})
                response.raise_for_status()
                if i >= 5:  # warm-up
                    end_to_end_ms.append((time.perf_counter() - started) * 1e3)
                    decisions.append(response.json()["crossroads"]["decision_id"])
        server.terminate()
        server.wait(timeout=30)
    with open_store(f"sqlite:///{work}/local.db") as store:
        upstream_ms = [store.decision(d)["outcome"]["latency_s"] * 1e3 for d in decisions]
    own_ms = np.array(end_to_end_ms) - np.array(upstream_ms)
    e2e = float(np.median(end_to_end_ms))
    return {"requests": len(decisions), "max_tokens": 16, "end_to_end_p50_ms": e2e,
            "upstream_call_p50_ms": float(np.median(upstream_ms)), "crossroads_own_p50_ms": float(np.median(own_ms)),
            "share_recorded": float(np.median(own_ms / np.array(end_to_end_ms))),
            "share_from_added_latency": added_p50_ms / e2e}


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    latency, rps = results["latency"], results["throughput"]
    checks = [
        ("p50 added, no embedding (learner route) <= 5 ms", latency["learner"]["added_p50_ms"] <= 5),
        ("p50 added, embedding router <= 20 ms", latency["router"]["added_p50_ms"] <= 20),
        (">= 300 routed requests/s (learner route)", rps["learner_rps"] >= 300),
    ]
    results["checks"] = {name: ok for name, ok in checks}
    lines = ["# Server overhead (`python benchmarks/serve_overhead.py`)", "",
             f"{results['machine']['cores']} cores; load average at start {results['machine']['load_average_start'][0]:.2f}, "
             f"at end {results['machine']['load_average_end'][0]:.2f}. Upstream: crossroads' fake server, answering instantly.", "",
             "| target | p50 ms | p99 ms | added p50 ms | added p99 ms | p50 ratio |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in latency.items():
        lines.append(f"| {name} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s.get('added_p50_ms', 0):.2f} | "
                     f"{s.get('added_p99_ms', 0):.2f} | {s.get('ratio_p50', 1):.2f} |")
    lines += ["", f"Throughput ({rps['load_generator']}), {rps['concurrency']} concurrent connections for {rps['seconds']:g} s: upstream directly "
              f"{rps['direct_rps']:.0f} requests/s, through crossroads' learner route {rps['learner_rps']:.0f} routed requests/s.", ""]
    if "local_model" in results:
        lm = results["local_model"]
        lines += [f"Real model upstream (gemma-3-270m on llama.cpp, at most {lm['max_tokens']} tokens, greedy, "
                  f"{lm['requests']} requests through the learner route): end-to-end p50 {lm['end_to_end_p50_ms']:.0f} ms, "
                  f"of which the upstream call {lm['upstream_call_p50_ms']:.0f} ms; crossroads' own time p50 "
                  f"{lm['crossroads_own_p50_ms']:.1f} ms = {100 * lm['share_recorded']:.2f}% of end-to-end "
                  f"(the added p50 against the instant upstream is {100 * lm['share_from_added_latency']:.2f}% of it).", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'} {name}" for name, ok in checks]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "serve_overhead.md").write_text(text)
    (out / "serve_overhead.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
