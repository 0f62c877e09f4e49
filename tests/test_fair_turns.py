"""Fair turns at the embedder: a caller with many prompts queued does not make another wait behind all of them."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import ServerThread

from crossroads.serve.config import parse_config
from crossroads.serve.gateway import EMBEDDING_TURNS, Gateway
from crossroads.serve.turns import FairTurns
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream


async def take_turns(turns: FairTurns, arrivals: list[str], cancel: tuple[int, ...] = ()) -> list[str]:
    """Each caller of ``arrivals`` asks for a turn in that order while the first holds it; the order they got it
    (the waiters at the positions in ``cancel`` are cancelled before the first lets go)."""
    order: list[str] = []
    first_in, let_go = asyncio.Event(), asyncio.Event()

    async def work(k: int, caller: str) -> None:
        async with turns.turn(caller):
            order.append(f"{caller}{k}")
            if k == 0:
                first_in.set()
                await let_go.wait()
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(work(0, arrivals[0]))]
    await first_in.wait()
    for k, caller in enumerate(arrivals[1:], start=1):
        tasks.append(asyncio.create_task(work(k, caller)))
        await asyncio.sleep(0)
    assert turns.waiting() == len(arrivals) - 1
    for k in cancel:
        tasks[k].cancel()
    await asyncio.sleep(0)
    let_go.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert turns.waiting() == 0 and turns.held() == 0
    return order


def test_a_caller_arriving_behind_a_flood_gets_the_next_turn_but_one():
    order = asyncio.run(take_turns(FairTurns(), ["a"] * 6 + ["b", "c"]))
    assert order == ["a0", "a1", "b6", "c7", "a2", "a3", "a4", "a5"]


def test_one_caller_alone_is_served_first_come_first_served():
    assert asyncio.run(take_turns(FairTurns(), ["a"] * 5)) == ["a0", "a1", "a2", "a3", "a4"]


def test_callers_alternate_while_both_have_requests_waiting():
    order = asyncio.run(take_turns(FairTurns(), ["a", "a", "a", "a", "b", "b", "b"]))
    assert order == ["a0", "a1", "b4", "a2", "b5", "a3", "b6"]


def test_a_cancelled_waiter_leaves_the_rotation_and_the_turn_moves_on():
    order = asyncio.run(take_turns(FairTurns(), ["a", "a", "b", "c"], cancel=(2,)))
    assert order == ["a0", "a1", "c3"]


def test_a_waiter_cancelled_just_as_its_turn_came_passes_it_on():
    async def scenario() -> list[str]:
        turns, order = FairTurns(), []

        async def work(caller: str) -> None:
            async with turns.turn(caller):
                order.append(caller)

        async with turns.turn("a"):
            b = asyncio.create_task(work("b"))
            c = asyncio.create_task(work("c"))
            await asyncio.sleep(0)
        b.cancel()  # b was handed the turn when "a" let go, but has not run yet
        await asyncio.gather(b, c, return_exceptions=True)
        assert b.cancelled() and turns.held() == 0
        return order

    assert asyncio.run(scenario()) == ["c"]


def test_with_two_turns_two_callers_work_at_once_but_one_caller_never_holds_both():
    async def scenario() -> tuple[list[str], int, int]:
        turns, order, most = FairTurns(slots=2), [], 0

        async def work(name: str) -> None:
            nonlocal most
            async with turns.turn(name[0]):
                order.append(name)
                most = max(most, turns.held())
                await asyncio.sleep(0.01)

        await asyncio.gather(*(work(f"a{k}") for k in range(4)))
        alone = most
        most = 0
        await asyncio.gather(*(work(name) for name in ("a0", "a1", "a2", "b0", "b1")))
        return order[4:], alone, most

    order, alone, together = asyncio.run(scenario())
    assert alone == 1 and together == 2
    assert order == ["a0", "b0", "a1", "b1", "a2"]


def test_turns_must_be_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        FairTurns(slots=0)


# -- through the server ---------------------------------------------------------------------------
FLOOD_KEY, USER_KEY = "flood-key", "user-key"


class GatedEmbedder:
    """The real embedder; records the order prompts reach it, and holds the first one until ``gate`` is set."""

    def __init__(self) -> None:
        from crossroads.embeddings import make_embedder

        self.inner = make_embedder("minilm-onnx")
        self.name = self.inner.name
        self.order: list[str] = []
        self.gate = threading.Event()

    def embed(self, texts, **options):
        self.order.extend(texts)
        if len(self.order) == 1:
            assert self.gate.wait(30)
        return self.inner.embed(texts, **options)


def test_the_server_answers_one_caller_while_anothers_flood_waits_for_the_embedder(tmp_path, monkeypatch):
    monkeypatch.setenv("TURNS_CLIENT_KEYS", f"{FLOOD_KEY},{USER_KEY}")
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": "echo"} for name in ("big", "small")]
    config = parse_config({"models": models, "routes": {"smart": {"learner": "linucb:seed=0"}},
                           "store": f"sqlite:///{tmp_path}/store.db",
                           "security": {"api_keys_env": "TURNS_CLIENT_KEYS"}})
    embedder = GatedEmbedder()
    gateway = Gateway(config, http_client=FakeUpstream().async_client(), embedder=embedder)
    assert EMBEDDING_TURNS == 2
    with ServerThread(gateway) as server, ThreadPoolExecutor(8) as pool:
        def route(key: str, prompt: str) -> int:
            return httpx.post(server.url + "/v1/route", json={"model": "smart", "prompt": prompt},
                              headers={"authorization": f"Bearer {key}"}, timeout=60).status_code

        def waiting() -> int:
            text = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {USER_KEY}"}).text
            return int(float(re.search(r"^crossroads_embedding_waiting (\S+)$", text, re.M).group(1)))

        flood = [pool.submit(route, FLOOD_KEY, "flood 0")]
        deadline = time.monotonic() + 30
        while not embedder.order:  # the flood's first prompt is at the embedder, held there
            assert time.monotonic() < deadline
            time.sleep(0.02)
        flood += [pool.submit(route, FLOOD_KEY, f"flood {k}") for k in range(1, 6)]
        while waiting() < 5:  # one turn per caller: the rest of the flood waits
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # the other caller takes the second turn at once: answered while the flood is still held
        assert pool.submit(route, USER_KEY, "the user's question").result(timeout=30) == 200
        assert embedder.order == ["flood 0", "the user's question"] and waiting() == 5
        embedder.gate.set()
        assert [f.result() for f in flood] == [200] * 6
    assert sorted(embedder.order[2:]) == [f"flood {k}" for k in range(1, 6)]  # sent at once: in any order


@pytest.mark.parametrize("key_id, client, address, caller", [
    ("k1", "digest", "10.0.0.1", "key:k1"), (None, "digest", "10.0.0.1", "client:digest"),
    (None, None, "10.0.0.1", "address:10.0.0.1")])
def test_a_request_is_counted_as_its_virtual_key_else_its_client_key_else_its_address(key_id, client, address,
                                                                                       caller):
    from crossroads.serve.requests import ChatRequest, Overrides

    request = ChatRequest("smart", {}, "hi", False, Overrides(), client=client, key_id=key_id, address=address)
    assert request.caller == caller
