"""OpenAIProvider over httpx: retries and their waits, errors without the key, and the server-sent-event reader."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from crossroads.upstream import providers
from crossroads.upstream.fake import BREAK_STREAM, HANG, MALFORMED, FakeUpstream
from crossroads.upstream.models import ModelConfig
from crossroads.upstream.providers import OpenAIProvider, UpstreamError

BODY = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def waits(monkeypatch):
    """The provider's sleeps between attempts, recorded instead of slept."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(providers.asyncio, "sleep", sleep)
    return slept


def call(provider: OpenAIProvider, body=BODY):
    return asyncio.run(provider.complete(body))


def chunks(provider: OpenAIProvider, body=BODY) -> list:
    async def read():
        return [chunk async for chunk in provider.stream(body)]

    return asyncio.run(read())


def provider_for(fake: FakeUpstream, **options) -> OpenAIProvider:
    return OpenAIProvider(ModelConfig("m", base_url="http://fake-upstream/v1", **options), fake.async_client())


def test_retryable_statuses_are_retried_after_retry_after(waits):
    fake = FakeUpstream([429, 503, "answered"])
    answer = call(provider_for(fake, max_retries=2))
    assert answer["choices"][0]["message"]["content"] == "answered"
    assert len(fake.requests) == 3
    assert waits[0] == 0.0  # the 429 said Retry-After: 0
    assert 0.75 <= waits[1] <= 1.0  # the 503 said nothing: the backoff of the second retry (1 s, less jitter)


def test_a_client_error_is_not_retried_and_keeps_its_status_and_message(waits):
    fake = FakeUpstream([400, "never asked"])
    with pytest.raises(UpstreamError) as caught:
        call(provider_for(fake, max_retries=3))
    assert caught.value.kind == "status" and caught.value.status == 400
    assert "injected 400" in str(caught.value)
    assert len(fake.requests) == 1 and waits == []


def test_retries_run_out_with_the_last_failure(waits):
    fake = FakeUpstream([500, 500, 502, "too late"])
    with pytest.raises(UpstreamError) as caught:
        call(provider_for(fake, max_retries=2))
    assert caught.value.status == 502 and len(fake.requests) == 3
    assert len(waits) == 2
    assert 0.375 <= waits[0] <= 0.5 and 0.75 <= waits[1] <= 1.0


def test_a_long_retry_after_is_capped_at_a_minute(waits):
    replies = iter([httpx.Response(503, headers={"retry-after": "3600"}, json={"error": {"message": "busy"}}),
                    httpx.Response(200, json={"choices": []})])
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(replies)))
    provider = OpenAIProvider(ModelConfig("m", base_url="http://up/v1", max_retries=1), client)
    assert call(provider) == {"choices": []}
    assert waits == [60.0]


def test_the_key_goes_as_a_bearer_token_and_never_into_an_error(monkeypatch, waits):
    monkeypatch.setenv("UP_KEY", "sk-secret-value-123")
    fake = FakeUpstream(default="fine")
    assert call(provider_for(fake, api_key_env="UP_KEY"))["choices"][0]["message"]["content"] == "fine"
    assert fake.requests[0]["headers"]["authorization"] == "Bearer sk-secret-value-123"
    with pytest.raises(UpstreamError) as caught:  # a 401 that quotes the Authorization header back
        call(provider_for(FakeUpstream(), api_key_env="UP_KEY"), {**BODY, "model": "echo-key-401"})
    assert caught.value.status == 401 and "sk-secret" not in str(caught.value) and "[redacted]" in str(caught.value)


def test_no_key_sends_no_authorization_header():
    fake = FakeUpstream(default="fine")
    call(provider_for(fake))
    assert "authorization" not in fake.requests[0]["headers"]


@pytest.mark.parametrize(("fault", "kind"), [(HANG, "timeout"), (MALFORMED, "malformed")])
def test_a_hung_or_malformed_answer_has_its_kind(fault, kind, waits):
    with pytest.raises(UpstreamError) as caught:
        call(provider_for(FakeUpstream(default=fault), max_retries=0, timeout_s=5))
    assert caught.value.kind == kind


def test_an_unreachable_upstream_names_its_url_without_credentials(waits):
    provider = OpenAIProvider(ModelConfig("m", base_url="http://user:pw-secret@127.0.0.1:9/v1", max_retries=1))
    with pytest.raises(UpstreamError) as caught:
        call(provider)
    asyncio.run(provider.aclose())
    assert caught.value.kind == "connection" and "pw-secret" not in str(caught.value)
    assert "127.0.0.1:9" in str(caught.value) and len(waits) == 1


def sse_provider(raw: bytes) -> OpenAIProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)))
    return OpenAIProvider(ModelConfig("m", base_url="http://up/v1", max_retries=0), client)


def test_the_event_reader_skips_comments_and_other_fields_and_stops_at_done():
    first, second = {"choices": [{"delta": {"content": "a"}}]}, {"choices": [{"delta": {"content": "b"}}]}
    raw = (": keep-alive\n\n" f"event: message\ndata: {json.dumps(first)}\n\n"
           f"data:{json.dumps(second)}\n\n"  # no space after the colon is allowed too
           "data: [DONE]\n\n" "data: not read\n\n").encode()
    assert chunks(sse_provider(raw)) == [first, second]


def test_data_lines_of_one_event_are_joined():
    raw = b'data: {"choices":\ndata: []}\n\n'
    assert chunks(sse_provider(raw)) == [{"choices": []}]


def test_an_error_event_after_chunks_breaks_the_stream_and_before_them_is_a_bad_answer():
    ok = json.dumps({"choices": [{"delta": {"content": "a"}}]})
    error = json.dumps({"error": {"message": "overloaded"}})
    with pytest.raises(UpstreamError) as caught:
        chunks(sse_provider(f"data: {ok}\n\ndata: {error}\n\n".encode()))
    assert caught.value.kind == "broken" and "overloaded" in str(caught.value)
    with pytest.raises(UpstreamError) as caught:
        chunks(sse_provider(f"data: {error}\n\n".encode()))
    assert caught.value.kind == "malformed" and "overloaded" in str(caught.value)


def test_a_stream_that_is_empty_or_not_json_is_malformed():
    for raw in (b"data: [DONE]\n\n", b"data: {oops\n\n", b"data: [1, 2]\n\n"):
        with pytest.raises(UpstreamError) as caught:
            chunks(sse_provider(raw))
        assert caught.value.kind == "malformed"


def test_a_dropped_connection_mid_stream_is_broken_and_local_answers_lose_their_leading_space():
    with pytest.raises(UpstreamError) as caught:
        chunks(provider_for(FakeUpstream(default=BREAK_STREAM)))
    assert caught.value.kind == "broken" and "after 2 chunks" in str(caught.value)
    texts = [c["choices"][0]["delta"].get("content") for c in chunks(provider_for(FakeUpstream(default=" hi there"),
                                                                                  local=True)) if c["choices"]]
    assert "".join(t or "" for t in texts) == "hi there"
    answer = call(provider_for(FakeUpstream(default=" hi there"), local=True))
    assert answer["choices"][0]["message"]["content"] == "hi there"
