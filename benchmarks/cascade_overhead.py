"""What a served cascade adds to a request besides its upstream calls: the verifier and the policy between calls.

Run from the repository root::

    python benchmarks/cascade_overhead.py

A gateway with two routes over the same three models and the same router file (the shipped
``default``), one a plain router route and one a ``cascade`` route, answers the same prompts
from the fake upstream in process (no time passes upstream).  With no cost weight and
``max_calls: 3``, every cascade request calls all three models.  Per request:
the plain route's time (one decision, one call, its outcome) and the cascade's (one decision,
three calls, the verifier and the policy after each, its outcome), interleaved, best of
``--repeats`` rounds.  The cascade's own cost is its time minus the plain route's and minus two
more calls (each call's share measured as the plain route's time minus a decision's).
Writes ``benchmarks/results/cascade_overhead.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _shared import Table, cell, machine, write_results

from crossroads.serve.config import parse_config
from crossroads.serve.gateway import Gateway
from crossroads.serve.requests import parse_chat_request
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream

PRICES = {"cheap": 0.1, "mid": 1.0, "dear": 10.0}
ANSWERS = {"cheap": "17 x 23 = 391", "mid": "The answer is 392", "dear": "It is 391."}
PROMPTS = [f"What is {a} times {b}? Answer with the number." for a, b in zip(range(11, 41), range(23, 53))]


def gateway(tmp: Path) -> Gateway:
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": name, "max_retries": 0,
               "price_per_mtok_in": price, "price_per_mtok_out": 3 * price} for name, price in PRICES.items()]
    # no cost weight: a second opinion is always worth its price, so the cascade calls every model
    routes = {"plain": {"router_file": "default"},
              "cascade": {"router_file": "default", "cascade": {"max_calls": 3, "resolve": 1.0}}}
    config = parse_config({"models": models, "routes": routes, "store": f"sqlite:///{tmp}/store.db",
                           "ack_after_write": False})
    return Gateway(config, http_client=FakeUpstream(answer=lambda body: ANSWERS[body["model"]]).async_client())


async def timed(gate: Gateway, route: str, prompts: list[str]) -> tuple[float, list[int]]:
    calls, started = [], time.perf_counter()
    for prompt in prompts:
        request = parse_chat_request({"model": route, "messages": [{"role": "user", "content": prompt}]},
                                     "last_message", 64)
        _, answer = await gate.complete(request)
        calls.append(len(answer["crossroads"].get("cascade", {}).get("calls", [None])))
    return (time.perf_counter() - started) / len(prompts), calls


async def decisions(gate: Gateway, prompts: list[str]) -> float:
    started = time.perf_counter()
    for prompt in prompts:
        await gate.decide(parse_chat_request({"model": "plain", "messages": [{"role": "user", "content": prompt}]},
                                             "last_message", 64))
    return (time.perf_counter() - started) / len(prompts)


async def measure(repeats: int, tmp: Path) -> dict:
    gate = gateway(tmp)
    await timed(gate, "plain", PROMPTS[:3])  # warm: embedder, router, store
    await timed(gate, "cascade", PROMPTS[:3])
    plain, cascade, decide, calls = [], [], [], []
    for _ in range(repeats):
        plain.append((await timed(gate, "plain", PROMPTS))[0])
        seconds, made = await timed(gate, "cascade", PROMPTS)
        cascade.append(seconds)
        calls += made
        decide.append(await decisions(gate, PROMPTS))
    await gate.aclose()
    plain_s, cascade_s, decide_s = min(plain), min(cascade), min(decide)
    call_s = plain_s - decide_s
    mean_calls = sum(calls) / len(calls)
    own_s = cascade_s - plain_s - (mean_calls - 1) * call_s
    return {"plain_request_ms": 1e3 * plain_s, "cascade_request_ms": 1e3 * cascade_s, "decision_ms": 1e3 * decide_s,
            "call_ms": 1e3 * call_s, "calls_per_cascade": mean_calls, "cascade_own_ms": 1e3 * own_s,
            "cascade_own_per_call_ms": 1e3 * own_s / mean_calls, "own_over_decision": own_s / decide_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(measure(args.repeats, Path(tmp)))
    table = Table("A cascade route's own time per request (fake upstream in process, best of "
                  f"{args.repeats} rounds of {len(PROMPTS)} prompts)", ["figure", "value"])
    table.add("plain router route: decision + 1 call + outcome", cell(found["plain_request_ms"], digits=2) + " ms")
    table.add("router decision alone", cell(found["decision_ms"], digits=2) + " ms")
    table.add("cascade route: decision + calls + verifier and policy + outcome",
              cell(found["cascade_request_ms"], digits=2) + " ms")
    table.add("calls per cascade request", cell(found["calls_per_cascade"], digits=2))
    table.add("cascade's own time (verifier, policy, bookkeeping)", cell(found["cascade_own_ms"], digits=2) + " ms")
    table.add("... per call", cell(found["cascade_own_per_call_ms"], digits=2) + " ms")
    table.add("... as a share of a router decision", cell(found["own_over_decision"], digits=2) + "x")
    table.print()
    write_results("cascade_overhead", {"machine": machine(), **found}, "Served cascade overhead",
                  ["Reproduce: `python benchmarks/cascade_overhead.py`."], [table])
    return 0


if __name__ == "__main__":
    sys.exit(main())
