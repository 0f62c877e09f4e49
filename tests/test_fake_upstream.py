"""The one fake upstream: the same behaviours in process (an httpx transport) and on a socket."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from crossroads.upstream.fake import BREAK_STREAM, FAKE_BASE_URL, HANG, MALFORMED, FakeUpstream, slow

HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


class Letters:
    """A tiny embedder: one dimension per letter a-c, for checking vectors come back in order."""

    def embed(self, texts):
        return np.array([[t.count("a"), t.count("b"), t.count("c")] for t in texts], dtype=np.float32)


def chat(client: httpx.Client, base_url: str, model: str, **body) -> httpx.Response:
    return client.post(f"{base_url}/chat/completions", json={**HELLO, "model": model, **body}, timeout=5)


@pytest.fixture(params=["in-process", "socket"])
def reach(request):
    """(fake, client, base_url) for each way of reaching the fake."""
    fake = FakeUpstream(embedder=Letters(), embedding_model="letters")
    if request.param == "in-process":
        yield fake, fake.client(), FAKE_BASE_URL
        return
    with fake.serve() as server, httpx.Client() as client:
        yield fake, client, server.base_url


def test_answers_echo_with_usage_and_record_the_request(reach):
    fake, client, base_url = reach
    answer = chat(client, base_url, "echo", temperature=0.5).json()
    assert answer["choices"][0]["message"]["content"] == "echo: hello there"
    assert answer["usage"]["completion_tokens"] == 3 and answer["usage"]["prompt_tokens"] > 0
    assert fake.requests[-1]["body"]["temperature"] == 0.5 and fake.requests[-1]["path"] == "/v1/chat/completions"


def test_model_names_inject_faults(reach):
    fake, client, base_url = reach
    assert chat(client, base_url, "status-503").status_code == 503
    assert [chat(client, base_url, "flaky-2").status_code for _ in range(3)] == [500, 500, 200]
    assert chat(client, base_url, "malformed").text == "{not json"
    refused = client.post(f"{base_url}/chat/completions", json={**HELLO, "model": "echo-key-401"},
                          headers={"authorization": "Bearer sk-abc"})
    assert refused.status_code == 401 and "Bearer sk-abc" in refused.json()["error"]["message"]


def test_the_script_comes_first_then_the_default(reach):
    fake, client, base_url = reach
    fake.script = ["Rating: [[7]]", 429]
    fake.default = "always this"
    assert chat(client, base_url, "echo").json()["choices"][0]["message"]["content"] == "Rating: [[7]]"
    limited = chat(client, base_url, "echo")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "0"
    assert chat(client, base_url, "status-500").json()["choices"][0]["message"]["content"] == "always this"


def test_streams_and_a_broken_stream(reach):
    fake, client, base_url = reach
    with client.stream("POST", f"{base_url}/chat/completions", json={**HELLO, "model": "echo", "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) == 5  # three words, the stop chunk, [DONE]
    fake.script = [BREAK_STREAM]
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", f"{base_url}/chat/completions", json={**HELLO, "model": "x", "stream": True}) as r:
            list(r.iter_lines())


def test_embeddings_come_from_the_embedder_in_any_order_the_index_allows(reach):
    fake, client, base_url = reach
    body = client.post(f"{base_url}/embeddings", json={"model": "letters", "input": ["aab", "c"]}).json()
    assert [row["index"] for row in body["data"]] == [1, 0]
    assert {row["index"]: row["embedding"] for row in body["data"]} == {0: [2.0, 1.0, 0.0], 1: [0.0, 0.0, 1.0]}
    assert client.post(f"{base_url}/embeddings", json={"model": "other", "input": "a"}).status_code == 404


def test_a_custom_answer_is_how_recorded_responses_plug_in(reach):
    fake, client, base_url = reach
    fake.answer = lambda body: f"recorded answer of {body['model']}"
    assert chat(client, base_url, "gpt-4").json()["choices"][0]["message"]["content"] == "recorded answer of gpt-4"


def test_in_process_time_does_not_pass_a_slow_reply_times_out_at_once():
    fake = FakeUpstream([HANG, slow(0.5), slow(0.5)])
    client = fake.client()
    with pytest.raises(httpx.ReadTimeout):
        chat(client, FAKE_BASE_URL, "echo")
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{FAKE_BASE_URL}/chat/completions", json={**HELLO, "model": "echo"}, timeout=0.1)
    assert chat(client, FAKE_BASE_URL, "echo").status_code == 200  # within a 5 s timeout: answered


def test_an_async_client_sees_the_same_fake():
    fake = FakeUpstream([MALFORMED])

    async def run():
        async with fake.async_client() as client:
            first = await client.post(f"{FAKE_BASE_URL}/chat/completions", json={**HELLO, "model": "echo"})
            second = await client.post(f"{FAKE_BASE_URL}/chat/completions", json={**HELLO, "model": "echo"})
            return first.text, second.json()["choices"][0]["message"]["content"]

    assert asyncio.run(run()) == ("{not json", "echo: hello there")


def test_an_api_key_is_required_when_set():
    fake = FakeUpstream(api_key="sk-right")
    client = fake.client()
    assert chat(client, FAKE_BASE_URL, "echo").status_code == 401
    assert client.post(f"{FAKE_BASE_URL}/chat/completions", json={**HELLO, "model": "echo"},
                       headers={"authorization": "Bearer sk-right"}).status_code == 200
