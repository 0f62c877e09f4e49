"""crossroads.Client and AsyncClient: the OpenAI client's shape, routing in-process with no server."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import crossroads
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream
from crossroads.upstream.providers import UpstreamError

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def config(tmp_path):
    models = [{"name": name, "base_url": FAKE_BASE_URL, "upstream_model": behaviour, "max_retries": 0,
               "price_per_mtok_in": price} for name, behaviour, price in
              (("big", "echo", 10.0), ("small", "echo", 0.1), ("broken", "break-stream", 0.1))]
    return {"models": models, "store": f"sqlite:///{tmp_path}/client.db", "default_route": "auto",
            "routes": {"auto": {"learner": "thompson:seed=0", "models": ["big", "small"],
                                "objective": "quality=1,cost=0.5"}}}


def test_sync_client_answers_streams_routes_and_learns(config):
    with crossroads.Client(config, http_client=FakeUpstream().async_client()) as client:
        answer = client.chat.completions.create(model="auto", messages=HELLO)
        assert isinstance(answer, ChatCompletion) and answer.model in ("big", "small")
        assert answer.choices[0].message.content == "echo: hello there"
        chunks = list(client.chat.completions.create(messages=HELLO, stream=True))  # no model: the default route
        assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
        decision = client.route("What is 2 + 2?", model="auto", allowed_models=["small"])
        assert decision["model"] == "small" and decision["fallbacks"] == []
        receipt = client.feedback(answer.crossroads["decision_id"], quality=1.0)
        learner = client.gateway.learners.learner("auto", None)
        assert receipt["learned"] and learner.updates_ == 1 and learner.arms_[answer.model]["pulls"] == 1


def test_client_reads_extra_body_like_the_openai_sdk(config):
    with crossroads.Client(config, http_client=FakeUpstream().async_client()) as client:
        answer = client.chat.completions.create(model="auto", messages=HELLO,
                                                extra_body={"crossroads": {"allowed_models": ["big"]}})
        assert answer.model == "big"


def test_a_stream_that_breaks_raises_instead_of_hanging(config):
    with crossroads.Client(config, http_client=FakeUpstream().async_client()) as client:
        chunks = client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "a b c d"}],
                                                stream=True)
        with pytest.raises(UpstreamError, match="incomplete"):
            list(chunks)


def test_async_client(config):
    async def run():
        async with crossroads.AsyncClient(config, http_client=FakeUpstream().async_client()) as client:
            answer = await client.chat.completions.create(model="small", messages=HELLO)
            stream = await client.chat.completions.create(model="auto", messages=HELLO, stream=True)
            chunks = [chunk async for chunk in stream]
            decision = await client.route(HELLO, model="auto")
            receipt = await client.feedback(decision["decision_id"], reward=0.25)
            return answer, chunks, receipt

    answer, chunks, receipt = asyncio.run(run())
    assert answer.model == "small" and chunks[-1].choices[0].finish_reason == "stop"
    assert receipt["reward"] == 0.25 and receipt["applied"] == 1


def test_client_errors_are_clear(config):
    with crossroads.Client(config, http_client=FakeUpstream().async_client()) as client:
        with pytest.raises(crossroads.serve.routing.UnknownRoute, match="unknown model 'nope'"):
            client.chat.completions.create(model="nope", messages=HELLO)
        with pytest.raises(crossroads.serve.requests.BadRequest, match="messages"):
            client.chat.completions.create(model="auto", messages=[])


def test_the_client_is_a_drop_in_for_code_written_against_openai(config):
    """The same function runs against openai.OpenAI and crossroads.Client."""
    def ask(client, model):
        return client.chat.completions.create(model=model, messages=HELLO).choices[0].message.content

    upstream = FakeUpstream()
    direct = openai.OpenAI(base_url=FAKE_BASE_URL, api_key="none", max_retries=0, http_client=upstream.client())
    with crossroads.Client(config, http_client=upstream.async_client()) as routed:
        assert ask(direct, "echo") == ask(routed, "auto") == "echo: hello there"
