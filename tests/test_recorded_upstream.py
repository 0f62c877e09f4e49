"""The recorded upstream (production twin): answers, usage that reproduces recorded costs, prices, 404s,
streams, latency, the serve config it writes, and `crossroads twin`."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from cli_helpers import one_line_error

from crossroads.cli.main import main
from crossroads.data.dataset import ModelInfo, RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.objective.cost import ASSUMED_OUTPUT_TOKENS, estimate_tokens
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream
from crossroads.upstream.recorded import NoRecording, Recording, last_user_text
from crossroads.upstream.servers import free_port

FIXTURES = Path(__file__).parent / "fixtures"
ROUTERBENCH = f"routerbench:{FIXTURES / 'routerbench'}"  # responses, real costs, two missing outcomes
LLMROUTER = f"llmrouter:{FIXTURES / 'llmrouter'}"  # no responses
SMALL = f"crossroads:{FIXTURES / 'crossroads' / 'small.jsonl'}"  # recorded latencies, some missing


@pytest.fixture(scope="module")
def routerbench() -> Recording:
    return Recording.load([ROUTERBENCH])


def dataset(prompts: list[str], models: list[ModelInfo], cost: list[list[float]], quality=None,
            responses=None) -> RoutingDataset:
    n = len(prompts)
    quality = np.ones((n, len(models))) if quality is None else np.array(quality, dtype=float)
    return RoutingDataset([f"q{i}" for i in range(n)], prompts, ["c"] * n, ["s"] * n, models, quality,
                          np.array(cost, dtype=float), responses=responses)


def chat(client: httpx.Client, model: str, prompt, base_url: str = FAKE_BASE_URL, **body) -> httpx.Response:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]
    return client.post(f"{base_url}/chat/completions", json={"model": model, "messages": messages, **body}, timeout=10)


def outcomes(recording: Recording):
    """(row, model index, model name) of every recorded outcome."""
    quality = recording.dataset.quality
    return [(i, j, name) for j, name in enumerate(recording.dataset.model_names)
            for i in range(quality.shape[0]) if np.isfinite(quality[i, j])]


# -- the recording ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [ROUTERBENCH, LLMROUTER])
def test_token_counts_reproduce_the_recorded_cost(spec):
    recording = Recording.load([spec])
    data = recording.dataset
    assert {p.basis for p in recording.prices.values()} == {"dataset"}
    for i, j, name in outcomes(recording):
        price = recording.prices[name]
        answer = recording.answer(name, data.prompts[i])
        assert answer.row == i and answer.tokens_in >= 0 and answer.tokens_out >= 0
        assert isinstance(answer.tokens_in, int) and isinstance(answer.tokens_out, int)
        assert answer.tokens_in == estimate_tokens((data.full_prompts or [None] * len(data))[i] or data.prompts[i])
        billed = (answer.tokens_in * price.price_per_mtok_in + answer.tokens_out * price.price_per_mtok_out) / 1e6
        assert billed == pytest.approx(answer.cost_usd, abs=1e-15)
        assert abs(billed - data.cost_usd[i, j]) <= price.price_per_mtok_out / 1e6 / 2 + 1e-15
        assert recording.cost(i, name) == answer.cost_usd == recording.cost_matrix()[i, j]
        assert recording.quality(i, name) == data.quality[i, j]
        if data.responses is not None:
            assert answer.text == data.responses[i][j]
        else:
            assert answer.text == f"[recorded answer of {name}: quality {data.quality[i, j]:.3f}]"
    assert np.isnan(recording.cost_matrix()).sum() == np.isnan(data.quality).sum()


def test_a_recorded_cost_below_the_prompts_price_lowers_the_prompt_count():
    prompt = "x" * 400  # 100 tokens: 1e-4 US$ at 1 US$ per million
    recording = Recording(dataset([prompt], [ModelInfo("m", 1.0, 0.5)], [[0.00004]]))
    answer = recording.answer("m", prompt)
    assert answer.tokens_out == 0 and answer.tokens_in == 40
    assert answer.cost_usd == pytest.approx(0.00004)


def test_a_zero_output_price_counts_the_answer_and_fits_the_prompt():
    prompt = "x" * 400
    responses = [["a recorded answer of some length", None]]
    recording = Recording(dataset([prompt], [ModelInfo("m", 2.0, 0.0), ModelInfo("n", 2.0, 0.0)],
                                  [[0.0003, 0.0001]], responses=responses))
    answer, silent = recording.answer("m", prompt), recording.answer("n", prompt)
    assert answer.tokens_out == estimate_tokens(responses[0][0]) and silent.tokens_out == ASSUMED_OUTPUT_TOKENS
    assert (answer.tokens_in, silent.tokens_in) == (150, 50)
    assert answer.cost_usd == pytest.approx(0.0003) and silent.cost_usd == pytest.approx(0.0001)


def test_duplicate_prompts_keep_the_first_row():
    prompts = ["alpha?", "beta?", "alpha?", "gamma?"]
    recording = Recording(dataset(prompts, [ModelInfo("m", 1.0, 2.0)], [[1e-4], [2e-4], [3e-4], [4e-4]],
                                  quality=[[0.1], [0.2], [0.9], [0.4]],
                                  responses=[["first"], ["b"], ["second"], ["g"]]))
    assert recording.dataset.query_ids == ["q0", "q1", "q3"]
    answer = recording.answer("m", "alpha?")
    assert (answer.row, answer.text, recording.quality(answer.row, "m")) == (0, "first", 0.1)
    assert recording.answer("m", "gamma?").row == 2


def test_derived_prices_keep_the_mean_recorded_cost():
    prompts = ["p" * 40, "q" * 400, "r" * 4000]  # 10, 100 and 1,000 tokens
    cost = [[0.001, np.nan, 0.0], [0.004, np.nan, 0.0], [0.010, np.nan, 0.0]]
    models = [ModelInfo("unpriced", None, None), ModelInfo("never-costed", None, 3.0), ModelInfo("free", None, None)]
    recording = Recording(dataset(prompts, models, cost))
    mean_cost, mean_tokens = 0.005, (10 + 100 + 1000) / 3
    derived = recording.prices["unpriced"]
    assert derived.basis == "mean recorded cost"
    assert derived.price_per_mtok_in == derived.price_per_mtok_out == pytest.approx(
        mean_cost / (mean_tokens + ASSUMED_OUTPUT_TOKENS) * 1e6)
    per_out_token = derived.price_per_mtok_out / 1e6
    assert abs(np.mean(recording.cost_matrix()[:, 0]) - mean_cost) <= per_out_token / 2
    assert (recording.prices["never-costed"].price_per_mtok_in, recording.prices["never-costed"].price_per_mtok_out) \
        == (0.0, 0.0)
    assert recording.prices["free"].price_per_mtok_in == 0.0 and not recording.cost_matrix()[:, 1:].any()
    # derived prices are plain floats, so the serve config dumps as YAML
    assert yaml.safe_load(yaml.safe_dump(recording.serve_config("u")))["models"][0]["price_per_mtok_in"] == \
        pytest.approx(derived.price_per_mtok_in)


def test_what_the_recording_does_not_hold_is_a_one_line_error(routerbench):
    data = routerbench.dataset
    with pytest.raises(NoRecording, match="recording holds gpt-4-1106-preview, mistralai/mixtral-8x7b-chat"):
        routerbench.answer("gpt-5", data.prompts[0])
    with pytest.raises(NoRecording, match="answers only the 4 prompts of its dataset; it holds none starting 'Hi'"):
        routerbench.answer("gpt-4-1106-preview", "Hi")
    with pytest.raises(NoRecording, match="'gpt-4-1106-preview' has no recorded outcome for query 'routerbench/arc"):
        routerbench.answer("gpt-4-1106-preview", data.prompts[1])
    with pytest.raises(CrossroadsError, match="latency_scale must be a number >= 0"):
        Recording(data, latency_scale=-1)


def test_the_prompt_is_the_last_user_messages_text():
    parts = [{"type": "text", "text": "What is "}, {"type": "image_url", "image_url": {}},
             {"type": "text", "text": "2?"}]
    body = {"messages": [{"role": "user", "content": "old"}, {"role": "user", "content": parts},
                         {"role": "assistant", "content": "later"}]}
    assert last_user_text(body) == "What is 2?"
    assert last_user_text({"messages": [{"role": "system", "content": "s"}]}) is None


# -- the fake answering from it -----------------------------------------------------------------
def test_the_fake_answers_as_recorded_with_usage(routerbench):
    data = routerbench.dataset
    client = FakeUpstream(recording=routerbench).client()
    name = "meta/llama-2-70b-chat"
    parts = [{"type": "text", "text": data.prompts[2]}]
    completion = chat(client, name, parts).json()
    answer = routerbench.answer(name, data.prompts[2])
    assert completion["choices"][0]["message"]["content"] == data.responses[2][2]
    assert completion["usage"] == {"prompt_tokens": answer.tokens_in, "completion_tokens": answer.tokens_out,
                                   "total_tokens": answer.tokens_in + answer.tokens_out}
    models = client.get(f"{FAKE_BASE_URL}/models").json()["data"]
    assert [m["id"] for m in models] == data.model_names


@pytest.mark.parametrize("model, prompt, message", [
    ("gpt-5", 0, "The model `gpt-5` does not exist here: the recording holds gpt-4-1106-preview"),
    ("gpt-4-1106-preview", "What is the capital of France?",
     "answers only the 4 prompts of its dataset; it holds none starting 'What is the capital of France?'"),
    ("mistralai/mixtral-8x7b-chat", 1, "has no recorded outcome for query 'routerbench/arc-challenge.val.208@1684'"),
])
def test_the_fake_says_404_for_what_the_recording_does_not_hold(routerbench, model, prompt, message):
    client = FakeUpstream(recording=routerbench).client()
    reply = chat(client, model, routerbench.dataset.prompts[prompt] if isinstance(prompt, int) else prompt)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["type"] == "not_found" and message in error["message"] and "\n" not in error["message"]


def test_scripted_and_fault_models_still_come_first(routerbench):
    fake = FakeUpstream(["scripted"], recording=routerbench)
    client = fake.client()
    prompt = routerbench.dataset.prompts[0]
    assert chat(client, "gpt-4-1106-preview", prompt).json()["choices"][0]["message"]["content"] == "scripted"
    assert chat(client, "status-503", prompt).status_code == 503
    assert chat(client, "gpt-4-1106-preview", prompt).json()["choices"][0]["message"]["content"] == "D"


def test_a_stream_carries_the_usage_in_its_last_chunk(routerbench):
    data = routerbench.dataset
    name = "gpt-4-1106-preview"
    client = FakeUpstream(recording=routerbench).client()
    reply = chat(client, name, data.prompts[2], stream=True)
    events = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    answer = routerbench.answer(name, data.prompts[2])
    assert text == data.responses[2][0] == answer.text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == answer.tokens_out
    assert not any("usage" in chunk for chunk in chunks[:-1])


# -- on a socket ---------------------------------------------------------------------------------
def test_the_recording_over_a_socket_through_the_openai_sdk(routerbench):
    import openai

    data = routerbench.dataset
    with FakeUpstream(recording=routerbench).serve() as twin:
        client = openai.OpenAI(base_url=twin.base_url, api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == data.model_names
        name = "mistralai/mixtral-8x7b-chat"
        completion = client.chat.completions.create(model=name, messages=[{"role": "user", "content": data.prompts[3]}])
        answer = routerbench.answer(name, data.prompts[3])
        assert completion.choices[0].message.content == data.responses[3][1]
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (answer.tokens_in,
                                                                                         answer.tokens_out)
        chunks = list(client.chat.completions.create(model=name, stream=True, stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": data.prompts[3]}]))
        assert chunks[-1].usage.completion_tokens == answer.tokens_out
        with pytest.raises(openai.NotFoundError, match="has no recorded outcome"):
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": data.prompts[1]}])


def test_latency_scale_delays_a_socket_reply():
    quick, scaled = Recording.load([SMALL]), Recording.load([SMALL], latency_scale=0.25)
    data = scaled.dataset
    assert scaled.answer("big-model", data.prompts[0]).latency_s == pytest.approx(1.5 * 0.25)
    no_latency = scaled.answer("small-model", data.prompts[1])  # none recorded: estimated
    assert no_latency.latency_s == pytest.approx((0.3 + no_latency.tokens_out / 50) * 0.25)
    assert quick.answer("big-model", data.prompts[0]).latency_s == 0.0
    with FakeUpstream(recording=scaled).serve() as slow, FakeUpstream(recording=quick).serve() as fast, \
            httpx.Client() as client:
        elapsed = {}
        for name, server in (("slow", slow), ("fast", fast)):
            start = time.perf_counter()
            assert chat(client, "big-model", data.prompts[0], server.base_url).status_code == 200
            elapsed[name] = time.perf_counter() - start
    assert elapsed["slow"] >= 0.375 > elapsed["fast"]


def test_serve_config_is_accepted_by_the_server(routerbench):
    from crossroads.serve.config import parse_config

    config = parse_config(yaml.safe_load(yaml.safe_dump(routerbench.serve_config("http://127.0.0.1:8001/v1"))))
    assert [m.name for m in config.models] == routerbench.dataset.model_names
    for model in config.models:
        assert model.base_url == "http://127.0.0.1:8001/v1" and model.max_retries == 0
        price = routerbench.prices[model.name]
        assert model.price_per_mtok_in == price.price_per_mtok_in
        assert model.price_per_mtok_out == price.price_per_mtok_out
    assert config.default_route == "bandit" and config.routes[0].learner == "thompson"


# -- crossroads twin ------------------------------------------------------------------------------


def test_twin_help_lists_the_dataset_formats(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["twin", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "dataset formats" in out and "routerbench" in out and "--latency-scale" in out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nosuch:here"], "nosuch"),
    (["--dataset", ROUTERBENCH, "--write-config", "missing-dir/twin.yaml"], "directory missing-dir does not exist"),
])
def test_twin_mistakes_are_one_line_and_write_nothing(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["twin", "--port", str(free_port()), "--write-config", "twin.yaml", *argv]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "twin.yaml").exists()


def test_twin_on_a_taken_port_is_one_line_and_writes_nothing(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["twin", "--dataset", ROUTERBENCH, "--port", str(port), "--write-config",
                     str(tmp_path / "twin.yaml")]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_error(capsys)
    assert not (tmp_path / "twin.yaml").exists()


def test_twin_latency_scale_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["twin", "--dataset", ROUTERBENCH, "--latency-scale", "-1"])
    assert exit_info.value.code == 2 and "must be a number >= 0, got '-1'" in capsys.readouterr().err


def test_twin_serves_and_writes_a_config_that_config_check_accepts(capsys, tmp_path, monkeypatch):
    import uvicorn

    servers = []
    original = uvicorn.Server.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        servers.append(self)

    monkeypatch.setattr(uvicorn.Server, "__init__", keep)
    port, config = free_port(), tmp_path / "twin.yaml"
    results = []
    argv = ["twin", "--dataset", ROUTERBENCH, "--port", str(port), "--latency-scale", "0",
            "--write-config", str(config)]
    thread = threading.Thread(target=lambda: results.append(main(argv)))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (servers and servers[0].started):
            assert thread.is_alive() and time.monotonic() < deadline, capsys.readouterr().err
            time.sleep(0.02)
        reply = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
        assert [m["id"] for m in reply.json()["data"]][0] == "gpt-4-1106-preview"
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join(timeout=15)
    assert results == [0]
    banner = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(banner) == 1 and "4 queries x 3 models" in banner[0] and f"http://127.0.0.1:{port}/v1" in banner[0]
    assert f"crossroads serve --config {config}" in banner[0]
    written = yaml.safe_load(config.read_text())
    assert {m["base_url"] for m in written["models"]} == {f"http://127.0.0.1:{port}/v1"}
    assert main(["config", "check", str(config)]) == 0
    assert capsys.readouterr().err.strip().endswith(": valid")
    assert math.isclose(written["models"][0]["price_per_mtok_out"], 30.0)
