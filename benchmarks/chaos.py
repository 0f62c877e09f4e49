"""Chaos: fuzzed requests, crashes, store outages, abuse and bursts against real ``crossroads serve`` processes.

Run from the repository root::

    python benchmarks/chaos.py [--scenarios fuzz,kill,postgres,disk,abuse,replicas] [--fuzz-requests 10000]
    # about 8 minutes; as root (the disk scenario mounts a tmpfs)

Everything runs on 127.0.0.1: crossroads' fake upstream in two worker processes (answers
at once), ``crossroads serve`` processes (``tests/serve_helpers.py``), a throwaway
PostgreSQL (``tests/postgres_server.py``) when its binaries are installed, and this script
as the client.  Every request has a timeout, every wait a deadline, and every process and
mount is removed at the end, also after a failure.

Scenarios and targets (issue 14):

* ``fuzz``: requests drawn with ``tests/test_fuzz.py``'s strategies (every endpoint and
  override field: malformed JSON, wrong types, huge numbers, NaN, lone surrogates, deep
  nesting, odd bearer tokens), 8 in flight: 0 answers 5xx, 0 hangs (no answer in 10 s),
  0 errors that are not JSON in OpenAI's shape; the server still answers a normal chat.
* ``kill``: chats and feedback from 4 clients, the server killed with SIGKILL three times
  at a random moment and restarted on the same store (SQLite, and PostgreSQL);
  ``postgres``: PostgreSQL stopped for 10 s under that load; ``disk``: the SQLite file on
  a tmpfs (64 MB) filled up under that load, then freed.  Every chat answered 200 is an
  acknowledged decision and outcome, every feedback answered 200 an acknowledged
  feedback; after recovery the store must hold all of them: 0 lost.  A control run kills
  a server with ``ack_after_write: false``, where losses are expected: it shows they are seen.
* ``abuse``: p99 of a small chat on a learner route, alone and while 200 concurrent bogus
  feedbacks and 16 concurrent 1 MB prompts (to an embedding route) hammer the server
  from another process with another client key: at most 3 times the p99 without the abuse.  Each abuse alone too,
  and 16 prompts of 256 tokens (what the embedder keeps of 1 MB), to tell size from count;
  beside each, the same chat sent to the upstream directly (the machine's own slowdown).
* ``replicas``: two servers on one PostgreSQL, one client key limited to 1 request/s
  with a burst of 40, 200 chats at once over both: at most 40 let through, plus what
  refills while the burst lasts.

Writes ``benchmarks/results/chaos.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from _shared import Table, machine, write_results
from postgres_server import PostgresServer, fresh_database
from serve_helpers import ServerProcess

from crossroads.store import open_store
from crossroads.store.spool import Spool
from crossroads.upstream.servers import free_port

SCENARIOS = ("fuzz", "kill", "postgres", "disk", "abuse", "replicas")
CLIENT_KEY, ADMIN_KEY = "chaos-client-key", "chaos-admin-key"
#: The abusing client's own key (the server accepts both client keys): its flood must not hold up the other client.
ABUSER_KEY = "chaos-abuser-key"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
TIMEOUT_S = 10.0  # a request not answered by then counts as a hang
RECOVERY_S = 60.0  # longest wait for a spool to drain into the store once it is back


# -- the processes ------------------------------------------------------------------------
#: The fake upstream as an app module for uvicorn's workers; it keeps no copy of the requests (1 MB prompts by the
#: thousand would pile up in memory).
UPSTREAM_APP = """from crossroads.upstream.fake import FakeUpstream, make_app
app = make_app(FakeUpstream(keep_requests=False))
"""


@contextlib.contextmanager
def fake_upstream(work: Path, workers: int = 2):
    """crossroads' fake OpenAI-compatible upstream in ``workers`` processes of their own; its base URL (ends in /v1).

    More than one, as a real provider is: one client's 1 MB prompts should not slow another client's answers there.
    """
    port = free_port()
    (work / "chaos_upstream.py").write_text(UPSTREAM_APP)
    log = open(work / "upstream.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "chaos_upstream:app", "--app-dir", str(work),
                                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                                "--log-level", "warning", "--no-access-log", "--lifespan", "off"],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fake upstream did not start: {(work / 'upstream.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()  # uvicorn's supervisor stops its workers on SIGTERM
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def serve_config(upstream: str, store: str, spool: Path, *, routes: dict | None = None, **extra) -> dict:
    """Two fake models (dear and cheap), a Thompson route, client and admin keys, the spool at ``spool``."""
    models = [{"name": name, "base_url": upstream, "upstream_model": "echo", "max_retries": 0, "timeout_s": 5,
               "price_per_mtok_in": price, "price_per_mtok_out": 3 * price} for name, price in (("big", 10.0),
                                                                                                ("small", 0.1))]
    security = {"api_keys_env": "CHAOS_CLIENT_KEYS", "admin_key_env": "CHAOS_ADMIN_KEY", **extra.pop("security", {})}
    return {"models": models, "default_route": "auto", "store": store, "store_spool": str(spool),
            "sync_interval_s": 0.2, "security": security,
            "routes": routes or {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"}}, **extra}


def server_env(client_key: str = CLIENT_KEY, admin_key: str = ADMIN_KEY) -> dict[str, str]:
    return {"CHAOS_CLIENT_KEYS": f"{client_key},{ABUSER_KEY}", "CHAOS_ADMIN_KEY": admin_key}


class Servers:
    """Every ``crossroads serve`` a scenario starts, so that all of them are stopped whatever happens."""

    def __init__(self, work: Path):
        self.work, self.started = work, []

    def start(self, config: dict, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(config, self.work, env or server_env())
        self.started.append(server)
        return server.__enter__()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.started:
            server.stop()


def wait_until(check, timeout_s: float, every_s: float = 0.2) -> bool:
    """Poll ``check()`` until it is true or ``timeout_s`` passed; whether it became true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every_s)
    return True


def spool_bytes(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


# -- fuzz -----------------------------------------------------------------------------------
def fuzz_requests(n: int) -> list[tuple]:
    """``n`` requests ``(kind, method, path, body, authorization)`` drawn with tests/test_fuzz.py's strategies.

    Derandomized, so every run sends the same ones.  A feedback's body is ``(value, raw, pick)``:
    it names a real decision only at sending time (see :func:`feedback_content`).
    """
    import test_fuzz as f
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    valid_chat = st.builds(lambda overrides, model, stream: {
        "model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "crossroads": overrides},
        f.OVERRIDES, st.sampled_from(["auto", "sessions", "small"]), st.booleans())
    endpoint = st.tuples(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
                         st.sampled_from(f.ENDPOINTS), st.one_of(st.none(), f.RAW, f.body(f.JSON)))
    requests = st.one_of(
        st.tuples(st.just("chat"), st.just("POST"), st.just("/v1/chat/completions"), f.body(f.CHAT), f.AUTH),
        st.tuples(st.just("chat streamed"), st.just("POST"), st.just("/v1/chat/completions"),
                  f.CHAT.map(lambda chat: f.encode({**chat, "stream": True})), f.AUTH),
        st.tuples(st.just("override"), st.just("POST"), st.just("/v1/chat/completions"), valid_chat.map(f.encode),
                  st.just(f"Bearer {f.CLIENT_KEY}".encode())),
        st.tuples(st.just("route"), st.just("POST"), st.just("/v1/route"), f.body(f.ROUTE), f.AUTH),
        st.tuples(st.just("feedback"), st.just("POST"), st.just("/v1/feedback"),
                  st.tuples(st.one_of(f.FEEDBACK, f.ANY), st.one_of(st.none(), f.RAW), st.integers(0, 2)), f.AUTH),
        st.tuples(st.just("endpoint"), endpoint, f.AUTH).map(lambda t: (t[0], *t[1], t[2])),
    )
    drawn: list[tuple] = []

    @settings(max_examples=n, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(requests)
    def draw(request):
        drawn.append(request)

    draw()
    return drawn[:n]


def feedback_content(value, raw, pick: int, seeded: list[str], fresh) -> bytes:
    """The body tests/test_fuzz.py's feedback property sends: FRESH and SEEDED become real decision ids."""
    import test_fuzz as f

    if isinstance(value, dict) and value.get("decision_id") == "FRESH":
        value = {**value, "decision_id": fresh()}
    elif isinstance(value, dict) and value.get("decision_id") == "SEEDED":
        value = {**value, "decision_id": seeded[pick]}
    elif isinstance(value, dict) and isinstance(value.get("decision_id"), str) and \
            len(value["decision_id"]) < 256 and not any("\ud800" <= c <= "\udfff" for c in value["decision_id"]):
        value = {**value, "decision_id": seeded[pick]}  # an unknown id of the right shape waits 1 s for a replica
    elif not isinstance(value, dict) or "decision_id" not in value:
        value = value if not isinstance(value, dict) else {**value, "decision_id": 0}
    return raw if raw is not None else f.encode(value)


def judge(response: httpx.Response) -> str | None:
    """What is wrong with an answer to a fuzzed request: ``5xx``, ``non-JSON error``, ``broken stream``, or None."""
    if response.status_code >= 500:
        return "5xx"
    if response.status_code >= 400 and response.request.method != "HEAD":
        try:
            error = response.json()["error"]
            shaped = (response.headers.get("content-type", "").startswith("application/json")
                      and isinstance(error.get("message"), str) and error["message"]
                      and isinstance(error.get("type"), str))
        except (ValueError, KeyError, TypeError, AttributeError):
            shaped = False
        return None if shaped else "non-JSON error"
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        if not events or events[-1] != "[DONE]" or any('"error"' in data for data in events[:-1]):
            return "broken stream"
    return None


def fuzz(upstream: str, work: Path, n: int) -> dict:
    """``n`` fuzzed requests against one server; failures by kind, status and endpoint."""
    import test_fuzz as f

    started = time.perf_counter()
    requests = fuzz_requests(n)
    drawn_s = time.perf_counter() - started
    print(f"fuzz: drew {len(requests):,} requests in {drawn_s:.0f} s", flush=True)
    routes = {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"},
              "sessions": {"learner": "ucb", "key": "session"}}
    # wrong keys by the thousand are the fuzzer's input, not an attack (throttling them: tests/test_rate_limits.py)
    config = serve_config(upstream, f"sqlite:///{work}/fuzz.db", work / "fuzz.spool", routes=routes,
                          failures_before_cooldown=1, security={"max_auth_failures": 1_000_000})
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    samples: list[dict] = []
    lock = threading.Lock()
    with Servers(work) as servers:
        server = servers.start(config, server_env(f.CLIENT_KEY, f.ADMIN_KEY))
        valid = {"authorization": f"Bearer {f.CLIENT_KEY}"}
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        with httpx.Client(base_url=server.url, timeout=TIMEOUT_S, limits=limits) as client:
            def decide() -> str:
                answer = client.post("/v1/route", json={"prompt": "seed decision"}, headers=valid)
                with lock:
                    counts[f"setup /v1/route {answer.status_code}"] += 1
                return answer.headers.get("x-crossroads-decision-id", "none")

            seeded = [decide() for _ in range(3)]

            def send(request: tuple) -> None:
                kind, method, path, content, auth = request
                try:
                    if kind == "feedback":
                        content = feedback_content(*content, seeded, decide)
                    elif kind == "endpoint" and path == "/v1/feedback" and method == "POST" and content \
                            and content.startswith(b'{"'):
                        content = None  # as in tests/test_fuzz.py: a random object would name an unknown id
                    headers = {"content-type": "application/json", **({"authorization": auth} if auth else {})}
                    response = client.request(method, path, content=content, headers=headers)
                    problem = judge(response)
                    status = str(response.status_code)
                except httpx.TimeoutException:
                    problem, status, response = "hang", "timeout", None
                except httpx.HTTPError as error:
                    problem, status, response = "transport error", type(error).__name__, None
                with lock:
                    counts[f"{path} {status}"] += 1
                    if problem is not None:
                        failures[f"{problem}: {method} {path} {status}"] += 1
                        if len(samples) < 20:
                            samples.append({"problem": problem, "method": method, "path": path, "status": status,
                                            "body": repr(content)[:300],
                                            "answer": None if response is None else response.text[:300]})

            sent_at = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(send, requests))
            sent_s = time.perf_counter() - sent_at
            alive = server.process is not None and server.process.poll() is None
            try:
                final = client.post("/v1/chat/completions", headers=valid,
                                    json={"model": "auto", "messages": [{"role": "user", "content": "still there?"}]})
                still_answers = final.status_code == 200
                cooling = client.get("/health").json().get("cooling_down")
            except httpx.HTTPError:
                still_answers, cooling = False, None
    by_problem = Counter()
    for key, count in failures.items():
        by_problem[key.split(":")[0]] += count
    return {"requests": len(requests), "draw_s": drawn_s, "send_s": sent_s, "kinds": Counter(r[0] for r in requests),
            "fivexx": by_problem["5xx"], "hangs": by_problem["hang"], "non_json_errors": by_problem["non-JSON error"],
            "broken_streams": by_problem["broken stream"], "transport_errors": by_problem["transport error"],
            "failures": dict(failures), "samples": samples, "statuses": dict(sorted(counts.items())),
            "alive_after": alive, "answers_after": still_answers, "cooling_down_after": cooling}


# -- load with a ledger of what was acknowledged --------------------------------------------
class Ledger:
    """What the server acknowledged, as its clients saw it, and every answer's status per phase.

    A chat answered 200 acknowledges a decision and its outcome (its decision id); a feedback answered
    200 acknowledges that feedback (its ``feedback_id``).
    """

    def __init__(self) -> None:
        self.decisions: list[str] = []
        self.feedback: dict[int, str] = {}  # feedback_id -> decision_id
        self.statuses: Counter[str] = Counter()  # "<phase> <chat|feedback> <status>"
        self.samples: list[str] = []  # bodies of unexpected answers
        self.phase = "load"
        self._awaiting: deque[str] = deque()  # acknowledged decisions that have no feedback yet
        self._lock = threading.Lock()

    def count(self, what: str, status: str, body: str | None = None) -> None:
        with self._lock:
            self.statuses[f"{self.phase} {what} {status}"] += 1
            if body is not None and len(self.samples) < 20:
                self.samples.append(f"{self.phase} {what} {status}: {body[:300]}")

    def decided(self, decision_id: str) -> None:
        with self._lock:
            self.decisions.append(decision_id)
            self._awaiting.append(decision_id)

    def to_judge(self) -> str | None:
        with self._lock:
            return self._awaiting.popleft() if self._awaiting else None

    def judge_later(self, decision_id: str) -> None:
        with self._lock:
            self._awaiting.append(decision_id)

    def judged(self, feedback_id: int, decision_id: str) -> None:
        with self._lock:
            self.feedback[feedback_id] = decision_id

    def phase_counts(self, phase: str) -> dict[str, int]:
        return {key.split(" ", 1)[1]: n for key, n in sorted(self.statuses.items()) if key.split(" ", 1)[0] == phase}


class Load:
    """``threads`` clients at ``self.url`` until stopped, each sending chats and, ``feedback_share`` of the time,
    feedback on a decision acknowledged earlier; a refused feedback (503) is sent again later."""

    def __init__(self, ledger: Ledger, url: str, threads: int = 4, feedback_share: float = 0.4, seed: int = 0):
        self.ledger, self.url, self.feedback_share, self.seed = ledger, url, feedback_share, seed
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2 * TIMEOUT_S)

    def _run(self, k: int) -> None:
        rng = random.Random(1000 * self.seed + k)
        with httpx.Client(timeout=TIMEOUT_S, headers=AUTH) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                url = self.url
                decision_id = self.ledger.to_judge() if rng.random() < self.feedback_share else None
                try:
                    if decision_id is None:
                        self._chat(client, url, f"question {k}-{i}: what is {rng.randint(2, 999)} squared?")
                    else:
                        self._feedback(client, url, decision_id, rng.random())
                except httpx.HTTPError as error:  # the server died under the request, or is not up yet
                    self.ledger.count("chat" if decision_id is None else "feedback", type(error).__name__)
                    time.sleep(0.05)

    def _chat(self, client: httpx.Client, url: str, prompt: str) -> None:
        answer = client.post(url + "/v1/chat/completions",
                             json={"model": "auto", "messages": [{"role": "user", "content": prompt}]})
        decision_id = answer.headers.get("x-crossroads-decision-id")
        if answer.status_code == 200 and decision_id:
            self.ledger.decided(decision_id)
            self.ledger.count("chat", "200")
        else:
            self.ledger.count("chat", str(answer.status_code), None if answer.status_code == 503 else answer.text)

    def _feedback(self, client: httpx.Client, url: str, decision_id: str, reward: float) -> None:
        # a transport error propagates: unknown whether it was stored, so not acknowledged and not sent again
        answer = client.post(url + "/v1/feedback", json={"decision_id": decision_id, "reward": reward})
        if answer.status_code == 200:
            self.ledger.judged(int(answer.json()["feedback_id"]), decision_id)
            self.ledger.count("feedback", "200")
            return
        if answer.status_code == 503:
            self.ledger.judge_later(decision_id)
        self.ledger.count("feedback", str(answer.status_code), None if answer.status_code == 503 else answer.text)


def missing_rows(store_url: str, spool: Path, ledger: Ledger) -> dict:
    """Open the store after recovery (replaying what its spool still holds) and count acknowledged rows it lacks."""
    with open_store(store_url, Spool(spool, 10**10)) as store:
        drained = wait_until(lambda: store.spooled_bytes() == 0, RECOVERY_S)
        rows = {d: store.decision(d) for d in ledger.decisions}
        feedback = {}
        for feedback_id in ledger.feedback:
            found, _ = store.feedback_since(feedback_id - 1, limit=1)
            feedback[feedback_id] = found[0]["decision_id"] if found and found[0]["seq"] == feedback_id else None
        spool_left = store.spooled_bytes()
    missing_decisions = [d for d, row in rows.items() if row is None]
    missing_outcomes = [d for d, row in rows.items() if row is not None and row["outcome"] is None]
    missing_feedback = [i for i, d in ledger.feedback.items() if feedback[i] != d]
    return {"acknowledged_decisions": len(rows), "acknowledged_feedback": len(ledger.feedback),
            "missing_decisions": len(missing_decisions), "missing_outcomes": len(missing_outcomes),
            "missing_feedback": len(missing_feedback), "lost_examples": (missing_decisions + missing_outcomes)[:5]
            + [f"feedback {i}" for i in missing_feedback[:5]], "spool_drained": drained, "spool_bytes_left": spool_left}


def summarise(name: str, ledger: Ledger, lost: dict, **extra) -> dict:
    statuses = dict(sorted(ledger.statuses.items()))
    bad = {key: n for key, n in statuses.items()
           if any(key.endswith(f" {code}") for code in ("400", "404", "409", "422", "500"))}
    result = {"run": name, **lost, "lost": lost["missing_decisions"] + lost["missing_outcomes"]
              + lost["missing_feedback"], "statuses": statuses, "unexpected_statuses": bad,
              "samples": ledger.samples, **extra}
    print(f"{name}: {lost['acknowledged_decisions']:,} decisions and {lost['acknowledged_feedback']:,} feedbacks "
          f"acknowledged; lost {lost['missing_decisions']} decisions, {lost['missing_outcomes']} outcomes, "
          f"{lost['missing_feedback']} feedbacks; unexpected answers {bad or 'none'}", flush=True)
    return result


# -- kill -9 --------------------------------------------------------------------------------
def kill(upstream: str, work: Path, backend: str, store_url: str, kills: int, seed: int, **extra) -> dict:
    """Load, SIGKILL at a random moment, restart on the same store; ``kills`` times; then count what was lost.

    ``extra``: more config (the control run turns ``ack_after_write`` off, to show that losses would be seen)."""
    label = backend + "".join(f", {key}: {value}" for key, value in extra.items())
    spool = work / f"kill-{label}.spool"
    config = serve_config(upstream, store_url, spool, **extra)
    ledger, rng = Ledger(), random.Random(seed)
    killed_after = []
    with Servers(work) as servers:
        server = servers.start(config)
        with Load(ledger, server.url, seed=seed) as load:
            for _ in range(kills):
                time.sleep(rng.uniform(1.0, 4.0))
                killed_after.append(len(ledger.decisions))
                server.kill()  # SIGKILL: no shutdown hook runs
                server = servers.start(config)
                load.url = server.url
            time.sleep(2.0)
        server.stop()
    return summarise(f"kill -9 x{kills} ({label})", ledger, missing_rows(store_url, spool, ledger),
                     backend=backend, kills=kills, decisions_before_each_kill=killed_after, config=extra)


# -- PostgreSQL down ------------------------------------------------------------------------
def postgres_outage(upstream: str, work: Path, postgres: PostgresServer, outage_s: float) -> dict:
    """Load; PostgreSQL stopped for ``outage_s``, then started again; load again; count what was lost."""
    store_url = fresh_database(postgres.url)
    spool = work / "postgres.spool"
    ledger = Ledger()
    with Servers(work) as servers:
        server = servers.start(serve_config(upstream, store_url, spool))
        with Load(ledger, server.url, seed=7):
            time.sleep(4.0)
            ledger.phase = "outage"
            postgres.stop()
            try:
                time.sleep(outage_s)
                spooled_in_outage = spool_bytes(spool)
            finally:
                postgres.restart()
            ledger.phase = "after"
            drained = wait_until(lambda: spool_bytes(spool) == 0, RECOVERY_S)
            time.sleep(3.0)
        server.stop()
    outage = ledger.phase_counts("outage")
    return summarise("PostgreSQL stopped", ledger, missing_rows(store_url, spool, ledger), outage_s=outage_s,
                     spooled_bytes_in_outage=spooled_in_outage, spool_drained_by_server=drained,
                     outage_statuses=outage, feedback_400_in_outage=outage.get("feedback 400", 0))


# -- a full disk ----------------------------------------------------------------------------
def full_disk(upstream: str, work: Path, size_mb: int, full_s: float) -> dict:
    """SQLite on a ``size_mb`` tmpfs, filled up under load for ``full_s``, then freed; count what was lost."""
    mount = work / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"skipped: cannot mount a tmpfs ({(mounted.stderr or mounted.stdout).strip()}); needs root"
        print(f"disk: {reason}")
        return {"run": "SQLite on a full disk", "skipped": reason}
    store_url, spool = f"sqlite:///{mount}/store.db", work / "disk-spool" / "store.spool"
    ledger = Ledger()
    filler = mount / "filler"
    try:
        with Servers(work) as servers:
            server = servers.start(serve_config(upstream, store_url, spool))
            with Load(ledger, server.url, seed=11):
                time.sleep(3.0)
                store_bytes = sum(path.stat().st_size for path in mount.iterdir())
                filled = fill(filler)
                ledger.phase = "full"
                hit = wait_until(lambda: spool_bytes(spool) > 0, full_s)
                time.sleep(max(0.0, full_s - 1.0) if hit else 0.0)
                spooled_when_full = spool_bytes(spool)
                filler.unlink()
                ledger.phase = "after"
                drained = wait_until(lambda: spool_bytes(spool) == 0, RECOVERY_S)
                time.sleep(3.0)
            server.stop()
            log = server.log_path.read_text(errors="replace")
        full = ledger.phase_counts("full")
        return summarise("SQLite on a full disk", ledger, missing_rows(store_url, spool, ledger), tmpfs_mb=size_mb,
                         store_bytes_before_filling=store_bytes, filler_bytes=filled, disk_full_hit=hit, spooled_bytes_when_full=spooled_when_full,
                         spool_drained_by_server=drained, full_statuses=full,
                         feedback_400_when_full=full.get("feedback 400", 0),
                         server_log_full_lines=sum("full" in line for line in log.splitlines()))
    finally:
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the disk is full; the bytes written."""
    written, chunk = 0, b"\0" * 65536
    with open(path, "wb", buffering=0) as file:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    written += file.write(chunk[:size])
            except OSError:
                continue
    return written


# -- abuse ----------------------------------------------------------------------------------
#: Run in its own process: ``feedbacks`` loops of feedback on unknown decision ids (half in the format of real ids,
#: which wait for another replica's commit) and ``prompts`` loops of chats to ``route`` whose prompt is a sentence
#: ``repeats`` times (22,000: 1 MB), until stdin closes; prints "started", then the count of each answer.
ABUSER = r"""
import asyncio, collections, json, sys, threading, uuid
import httpx

url, key, route, feedbacks, prompts, repeats = sys.argv[1:4] + [int(n) for n in sys.argv[4:7]]
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
big = json.dumps({"model": route, "messages": [{"role": "user", "content":
                  "The quick brown fox jumps over the lazy dog. " * repeats}]}).encode()
counts = collections.Counter()

async def loop(client, kind, k):
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if kind == "feedback":
                bogus = f"dec_{uuid.uuid4().hex}" if i % 2 else f"nope-{k}-{i}"
                answer = await client.post("/v1/feedback", json={"decision_id": bogus, "reward": 1.0})
            else:
                answer = await client.post("/v1/chat/completions", content=big,
                                           headers={"content-type": "application/json"})
            counts[f"{kind} {answer.status_code}"] += 1
        except httpx.HTTPError as error:
            counts[f"{kind} {type(error).__name__}"] += 1

async def main():
    n = feedbacks + prompts
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"authorization": f"Bearer {key}"}) as client:
        tasks = [loop(client, "feedback", k) for k in range(feedbacks)] + [loop(client, f"{len(big):,}-byte chat", k)
                                                                         for k in range(prompts)]
        print("started", flush=True)
        await asyncio.gather(*tasks)
    print(json.dumps(counts), flush=True)

asyncio.run(main())
"""


def timed_chats(url: str, routes: list[str], n: int, upstream: str, max_s: float = 60.0) -> dict[str, np.ndarray]:
    """Per route, the latency (s) of ``n`` small chats sent one at a time, after a warm-up; interleaved with them,
    the same chat sent to the upstream directly (``direct``): what the machine and the upstream alone take.
    Fewer than ``n`` if they take more than ``max_s`` in all."""
    times: dict[str, list[float]] = {route: [] for route in [*routes, "direct"]}
    deadline = time.monotonic() + max_s
    with httpx.Client(timeout=60, headers=AUTH) as client:
        for i in range(n + 10):
            if time.monotonic() > deadline and i > 20:
                break
            for route in times:
                started = time.perf_counter()
                target = upstream if route == "direct" else url + "/v1"
                answer = client.post(target + "/chat/completions", json={
                    "model": "echo" if route == "direct" else route,
                    "messages": [{"role": "user", "content": f"What is {i} plus {i + 1}?"}]})
                elapsed = time.perf_counter() - started
                if answer.status_code != 200:
                    raise RuntimeError(f"a normal chat on {route} got {answer.status_code}: {answer.text[:300]}")
                if i >= 10:
                    times[route].append(elapsed)
    return {route: np.array(values) for route, values in times.items()}


def under_abuse(url: str, names: list[str], n: int, upstream: str, feedbacks: int, prompts: int,
                repeats: int = 22_000) -> tuple[dict, dict]:
    """Timed chats (see :func:`timed_chats`) while another process sends ``feedbacks`` bogus feedbacks and
    ``prompts`` chats (1 MB prompts by default) at once, without pause; the times and the abuser's count of each
    answer."""
    abuser = subprocess.Popen([sys.executable, "-c", ABUSER, url, ABUSER_KEY, "smart", str(feedbacks), str(prompts),
                               str(repeats)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if abuser.stdout.readline().strip() != "started":
            raise RuntimeError("the abusing process did not start")
        time.sleep(2.0)  # every abusing request in flight
        times = timed_chats(url, names, n, upstream)
        return times, json.loads(abuser.communicate("", timeout=120)[0].strip().splitlines()[-1])  # EOF: stop
    finally:
        if abuser.poll() is None:
            abuser.kill()
            abuser.wait(timeout=10)


def abuse(upstream: str, work: Path, n: int, feedbacks: int, prompts: int) -> dict:
    """p99 of normal chats on two learner routes alone, under each abuse apart and both together, alone again."""
    routes = {"auto": {"learner": "thompson:seed=0", "objective": "quality=1,cost=0.5"},
              "smart": {"learner": "linucb:seed=0", "objective": "quality=1,cost=0.5"}}  # embeds every prompt
    config = serve_config(upstream, f"sqlite:///{work}/abuse.db", work / "abuse.spool", routes=routes)
    names = list(routes)
    phases: dict[str, dict[str, np.ndarray]] = {}
    answers: dict[str, dict] = {}
    both = f"{feedbacks} bogus feedbacks + {prompts} 1 MB prompts"
    with Servers(work) as servers:
        server = servers.start(config)
        phases["alone"] = timed_chats(server.url, names, n, upstream)
        # the last: prompts just long enough to be cut at the embedder's 256 tokens, to tell size from count
        for phase, (bogus, big, repeats) in ((both, (feedbacks, prompts, 22_000)),
                                             (f"{feedbacks} bogus feedbacks", (feedbacks, 0, 0)),
                                             (f"{prompts} 1 MB prompts", (0, prompts, 22_000)),
                                             (f"{prompts} 1.2 kB prompts (256 tokens)", (0, prompts, 26))):
            phases[phase], answers[phase] = under_abuse(server.url, names, n, upstream, bogus, big, repeats)
        phases["alone again"] = timed_chats(server.url, names, n, upstream)
    result = {"requests": n, "bogus_feedbacks_in_flight": feedbacks, "prompts_1mb_in_flight": prompts,
              "abused_phase": both, "abuse_answers": answers, "routes": {}}
    for route in [*names, "direct"]:
        figures = {phase: {"n": len(t[route]), "p50_ms": 1e3 * float(np.percentile(t[route], 50)),
                           "p99_ms": 1e3 * float(np.percentile(t[route], 99))} for phase, t in phases.items()}
        for phase in list(phases)[1:]:
            figures[phase]["p99_ratio"] = figures[phase]["p99_ms"] / figures["alone"]["p99_ms"]
        result["routes"][route] = figures
        print(f"abuse: {route}: " + "; ".join(f"{phase}: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms"
                                              for phase, f in figures.items()), flush=True)
    for phase, counts in answers.items():
        print(f"abuse: answers to the abuser ({phase}): {counts}", flush=True)
    return result


def abuse_table(a: dict) -> Table:
    table = Table(f"normal chats ({a['requests']} per route and phase, one at a time) alone and under abuse",
                  ["route", "phase", "chats timed", "p50 (ms)", "p99 (ms)", "p99 / p99 alone"])
    for route, figures in a["routes"].items():
        for phase, f in figures.items():
            table.add(route, phase, f["n"], f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}",
                      f"{f['p99_ratio']:.2f}" if "p99_ratio" in f else "-")
    table.notes.append("'auto': Thompson sampling (no embedding); 'smart': LinUCB on the prompt's embedding, the "
                       "route the 1 MB prompts go to; 'direct': the same chat sent to the fake upstream itself, "
                       "interleaved (what the machine and the upstream take without crossroads). Answers to the "
                       "abuser: "
                       + "; ".join(f"{phase}: {counts}" for phase, counts in a["abuse_answers"].items()))
    return table


# -- two replicas, one rate limit -----------------------------------------------------------
async def burst(urls: list[str], n: int) -> tuple[list[int | str], float]:
    """``n`` chats at once, spread over ``urls``; each answer's status and the seconds from first send to last answer."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=TIMEOUT_S * 3, limits=limits, headers=AUTH) as client:
        async def one(i: int) -> int | str:
            try:
                answer = await client.post(urls[i % len(urls)] + "/v1/chat/completions", json={
                    "model": "auto", "messages": [{"role": "user", "content": f"burst {i}"}]})
                return answer.status_code
            except httpx.HTTPError as error:
                return type(error).__name__

        started = time.monotonic()
        statuses = await asyncio.gather(*(one(i) for i in range(n)))
        return list(statuses), time.monotonic() - started


def replicas(upstream: str, work: Path, postgres: PostgresServer, n: int, rate_per_s: float, burst_size: int) -> dict:
    """Two servers on one PostgreSQL database, one client key, ``n`` chats at once: how many got through."""
    store_url = fresh_database(postgres.url)
    config = serve_config(upstream, store_url, work / "replicas.spool",
                          security={"rate_limit_per_s": rate_per_s, "rate_burst": burst_size,
                                    "rate_limit_shared": True})
    with Servers(work) as servers:
        urls = [servers.start(config).url, servers.start(config).url]
        statuses, took_s = asyncio.run(burst(urls, n))
    passed = sum(status == 200 for status in statuses)
    per_replica = [sum(status == 200 for status in statuses[k::2]) for k in range(2)]
    bound = burst_size + math.ceil(rate_per_s * took_s)
    print(f"replicas: {passed} of {n} let through in {took_s:.2f} s ({per_replica} per replica), bound {bound}: "
          f"{dict(Counter(map(str, statuses)))}", flush=True)
    return {"requests": n, "rate_limit_per_s": rate_per_s, "rate_burst": burst_size, "took_s": took_s,
            "let_through": passed, "per_replica": per_replica, "bound": bound,
            "statuses": dict(Counter(map(str, statuses)))}


# -- the report -----------------------------------------------------------------------------
def targets(results: dict) -> Table:
    """One line per target of the issue: what was measured and whether it is met."""
    table = Table("chaos targets (issue 14)", ["target", "measured", "met"])

    def line(target: str, measured: str, met: bool | None) -> None:
        table.add(target, measured, "-" if met is None else ("yes" if met else "NO"))
        results.setdefault("targets", []).append({"target": target, "measured": measured, "met": met})

    if (f := results.get("fuzz")) is not None:
        line(f"{f['requests']:,} fuzzed requests: 0 answers 5xx", f"{f['fivexx']}", f["fivexx"] == 0)
        line("... 0 hangs (no answer in 10 s)", f"{f['hangs']}", f["hangs"] == 0)
        line("... 0 errors not JSON in OpenAI's shape", f"{f['non_json_errors']}", f["non_json_errors"] == 0)
        line("... the server still answers a normal chat", f"alive {f['alive_after']}, answers {f['answers_after']}, "
             f"transport errors {f['transport_errors']}, broken streams {f['broken_streams']}",
             f["alive_after"] and f["answers_after"] and not f["transport_errors"] and not f["broken_streams"])
    for run in results.get("stores", []):
        if "skipped" in run:
            line(f"{run['run']}: 0 acknowledged rows lost", run["skipped"], None)
            continue
        measured = (f"{run['lost']} lost of {run['acknowledged_decisions']:,} decisions (+outcomes) and "
                    f"{run['acknowledged_feedback']:,} feedbacks ({run['missing_decisions']} decisions, "
                    f"{run['missing_outcomes']} outcomes, {run['missing_feedback']} feedbacks)")
        if run.get("config", {}).get("ack_after_write") is False:  # the control: not a target
            line(f"control, {run['run']}: losses expected, shows they would be counted", measured, None)
            continue
        line(f"{run['run']}: 0 acknowledged rows lost", measured, run["lost"] == 0)
        refused = run.get("feedback_400_in_outage", run.get("feedback_400_when_full"))
        if refused is not None:
            line(f"{run['run']}: feedback refused with 503, never 400", f"{refused} feedbacks answered 400",
                 refused == 0)
    if (a := results.get("abuse")) is not None:
        for route, figures in a["routes"].items():
            if route == "direct":
                continue
            abused = figures[a["abused_phase"]]
            machine = a["routes"]["direct"][a["abused_phase"]]["p99_ratio"]
            line(f"p99 of a normal chat on {route!r} under abuse <= 3x alone",
                 f"{abused['p99_ms']:.1f} ms / {figures['alone']['p99_ms']:.1f} ms = x{abused['p99_ratio']:.2f} "
                 f"(alone again: x{figures['alone again']['p99_ratio']:.2f}; the machine's own, the same chat "
                 f"sent to the upstream directly: x{machine:.2f})", abused["p99_ratio"] <= 3.0)
    if (r := results.get("replicas")) is not None:
        if "skipped" in r:
            line("two replicas, 40-request burst: at most 40 (+ refill) through", r["skipped"], None)
        else:
            line(f"two replicas, {r['rate_burst']}-request burst: at most {r['rate_burst']} (+ refill) through",
                 f"{r['let_through']} of {r['requests']} in {r['took_s']:.2f} s (bound {r['bound']}, "
                 f"per replica {r['per_replica']})", r["let_through"] <= r["bound"])
    return table


def details(results: dict) -> list[Table]:
    tables = []
    if (f := results.get("fuzz")) is not None and f["failures"]:
        table = Table("fuzz failures by problem, method, endpoint and status", ["failure", "requests"])
        for key, count in sorted(f["failures"].items(), key=lambda item: -item[1]):
            table.add(key, f"{count:,}")
        tables.append(table)
    if results.get("abuse") is not None:
        tables.append(abuse_table(results["abuse"]))
    runs = [run for run in results.get("stores", []) if "skipped" not in run]
    if runs:
        table = Table("acknowledged rows and the answers clients got, per run",
                      ["run", "decisions acked", "feedback acked", "lost decisions", "lost outcomes",
                       "lost feedback", "spool left (bytes)", "answers other than 200"])
        for run in runs:
            others = {key: n for key, n in run["statuses"].items() if not key.endswith(" 200")}
            table.add(run["run"], f"{run['acknowledged_decisions']:,}", f"{run['acknowledged_feedback']:,}",
                      run["missing_decisions"], run["missing_outcomes"], run["missing_feedback"],
                      run["spool_bytes_left"], ", ".join(f"{k}: {n}" for k, n in others.items()) or "none")
        tables.append(table)
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--fuzz-requests", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=10.0, help="how long PostgreSQL stays stopped")
    parser.add_argument("--full-s", type=float, default=8.0, help="how long the disk stays full")
    parser.add_argument("--tmpfs-mb", type=int, default=64,
                        help="size of the store's disk: big enough that the load alone does not fill it")
    parser.add_argument("--abuse-requests", type=int, default=300, help="timed normal chats per route and phase")
    parser.add_argument("--bogus-feedbacks", type=int, default=200)
    parser.add_argument("--big-prompts", type=int, default=16)
    parser.add_argument("--burst-requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ack-control", dest="ack_control", action="store_false",
                        help="skip the control run of `kill` with ack_after_write off (where losses are expected)")
    args = parser.parse_args()
    chosen = args.scenarios.split(",")
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    results: dict = {"machine": machine(), "scenarios": chosen, "args": vars(args), "stores": []}
    started = time.monotonic()
    postgres_missing = PostgresServer.available()
    with tempfile.TemporaryDirectory(prefix="crossroads-chaos-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        upstream = stack.enter_context(fake_upstream(work))
        postgres = None
        if postgres_missing is None and {"kill", "postgres", "replicas"} & set(chosen):
            postgres = stack.enter_context(PostgresServer())
        elif postgres_missing is not None:
            print(f"PostgreSQL runs skipped: {postgres_missing}")
        if "fuzz" in chosen:
            results["fuzz"] = fuzz(upstream, work, args.fuzz_requests)
            f = results["fuzz"]
            print(f"fuzz: {f['requests']:,} requests in {f['send_s']:.0f} s: {f['fivexx']} 5xx, {f['hangs']} hangs, "
                  f"{f['non_json_errors']} non-JSON errors; alive after: {f['alive_after']}", flush=True)
        if "kill" in chosen:
            results["stores"].append(kill(upstream, work, "sqlite", f"sqlite:///{work}/kill.db", args.kills, args.seed))
            if postgres is not None:
                results["stores"].append(kill(upstream, work, "postgresql", fresh_database(postgres.url), args.kills,
                                              args.seed + 1))
            else:
                results["stores"].append({"run": f"kill -9 x{args.kills} (postgresql)", "skipped": postgres_missing})
            if args.ack_control and "ack_after_write" in _config_fields():
                results["stores"].append(kill(upstream, work, "sqlite", f"sqlite:///{work}/kill-control.db",
                                              args.kills, args.seed, ack_after_write=False))
        if "postgres" in chosen:
            results["stores"].append(postgres_outage(upstream, work, postgres, args.outage_s) if postgres is not None
                                     else {"run": "PostgreSQL stopped", "skipped": postgres_missing})
        if "disk" in chosen:
            results["stores"].append(full_disk(upstream, work, args.tmpfs_mb, args.full_s))
        if "abuse" in chosen:
            results["abuse"] = abuse(upstream, work, args.abuse_requests, args.bogus_feedbacks, args.big_prompts)
        if "replicas" in chosen:
            results["replicas"] = (replicas(upstream, work, postgres, args.burst_requests, 1.0, 40)
                                   if postgres is not None else {"skipped": postgres_missing})
    results["took_s"] = time.monotonic() - started
    results["machine_end"] = machine()
    table = targets(results)
    tables = [table, *details(results)]
    for each in tables:
        each.print()
    ack = "ack_after_write" in _config_fields()
    write_results("chaos", results, "Chaos: fuzzing, crashes, outages, abuse, bursts",
                  [f"Run {results['machine']['date_utc']} on {results['machine']['cores']} cores (load average "
                   f"{results['machine']['load_average'][0]:.2f} at start, {results['machine_end']['load_average'][0]:.2f}"
                   f" at end) in {results['took_s'] / 60:.1f} min; scenarios {', '.join(chosen)}; the server's "
                   f"`ack_after_write` option {'exists (default on)' if ack else 'does not exist yet'}. Everything on "
                   "loopback: crossroads' fake upstream, `crossroads serve` processes, a local PostgreSQL. "
                   "`python benchmarks/chaos.py`"], tables)


def _config_fields() -> set[str]:
    from dataclasses import fields

    from crossroads.serve.config import ServeConfig

    return {f.name for f in fields(ServeConfig)}


if __name__ == "__main__":
    main()
