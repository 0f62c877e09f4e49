"""What a new user hits in the first hour: one-line errors before any work, the store's place, the banner,
`config check`, the local models' answers, and the calibrate line to paste."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import one_line_error

from crossroads.cli.main import main
from crossroads.upstream.fake import FAKE_BASE_URL, FakeUpstream
from crossroads.upstream.models import ModelConfig
from crossroads.upstream.providers import OpenAIProvider

FIXTURES = Path(__file__).parent / "fixtures"
MMLU_FIXTURE = f"routellm-mmlu:{FIXTURES / 'routellm' / 'mmlu'}"




@pytest.mark.parametrize("argv, message", [
    (["eval", "--dataset", MMLU_FIXTURE, "--router", "knn:k=abc"], "k='abc' is not a whole number"),
    (["eval", "--dataset", MMLU_FIXTURE, "--router", "knn:q=3"], "has no option 'q'; its options: k"),
    (["eval", "--dataset", MMLU_FIXTURE, "--router", "knn:k=0"], "knn k must be a whole number >= 1, got 0"),
    (["eval", "--dataset", MMLU_FIXTURE, "--cv", "50"], "--cv 50: the dataset has 5 queries"),
    (["route", "hi", "--router-file", "nope.npz"], "crossroads train --router NAME --out nope.npz"),
    (["route", "hi", "--strong", "gpt-4o", "--weak", "gpt-4o-mini", "--pool", "gpt-4o;gpt-4o-mini"],
     "give --pool or --strong/--weak, not both"),
    (["route", "hi", "--pool", "gpt-4o:price=1,gpt-4o-mini"], "separate models with ';'"),
])
def test_mistakes_are_one_line_before_any_work(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "eval" else [])) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "out").exists()  # nothing was written: the check came first


@pytest.mark.parametrize("argv, message", [
    (["eval", "--cv", "0"], "'0': give a whole number >= 2"),
    (["calibrate", "--router", "knn", "--strong-share", "0.5", "--cv", "1"], "'1': give a whole number >= 2"),
    (["train", "--router", "knn", "--out", "r.json"], "saved as .npz files, e.g. r.npz"),
    (["serve", "--port", "99999"], "'99999' is not a port: give a whole number from 1 to 65535"),
])
def test_option_values_are_checked_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_router_with_a_bad_option_is_never_saved(tmp_path, capsys):
    out = tmp_path / "bad.npz"
    assert main(["train", "--dataset", MMLU_FIXTURE, "--router", "knn:k=abc", "--out", str(out)]) == 2
    assert "is not a whole number" in one_line_error(capsys) and not out.exists()


def test_a_pool_of_plain_names_may_be_comma_separated(capsys):
    assert main(["route", "What is 2 + 2?", "--pool", "gpt-4o,gpt-4o-mini", "--json"]) == 0
    assert {row["model"] for row in json.loads(capsys.readouterr().out)["models"]} == {"gpt-4o", "gpt-4o-mini"}


def test_the_default_dataset_says_where_it_looked_and_how_to_point_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSROADS_DATA", str(tmp_path / "nowhere"))
    assert main(["eval", "--router", "knn", "--out", str(tmp_path / "out")]) == 2
    line = one_line_error(capsys)
    assert str(tmp_path / "nowhere") in line and "CROSSROADS_DATA" in line and "--dataset" in line


def test_every_dataset_option_lists_the_formats(capsys):
    for command in ("eval", "train", "calibrate", "simulate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "dataset formats" in out and "routellm-mtbench" in out and "llmrouter" in out, command


def test_a_keyed_api_without_its_key_fails_at_once_without_a_request(monkeypatch):
    from crossroads.embeddings.openai_compatible import OpenAICompatibleEmbedder
    from crossroads.errors import CrossroadsError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeUpstream()
    embedder = OpenAICompatibleEmbedder("text-embedding-3-small", http_client=fake.client())
    with pytest.raises(CrossroadsError, match=r"needs an API key: put it in \$OPENAI_API_KEY"):
        embedder.embed(["hello"])
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_local_models_answer_loses_its_leading_space(stream):
    fake = FakeUpstream([" Paris."])
    provider = OpenAIProvider(ModelConfig("gemma", base_url=FAKE_BASE_URL, local=True), fake.async_client())
    body = {"model": "gemma", "messages": [{"role": "user", "content": "capital of France?"}]}

    async def answer() -> str:
        if not stream:
            return (await provider.complete(body))["choices"][0]["message"]["content"]
        chunks = [chunk async for chunk in provider.stream(body)]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    assert asyncio.run(answer()) == "Paris."


# -- config check and the serve banner -----------------------------------------------------------
def write_config(path: Path, **extra) -> Path:
    config = {"models": [{"name": "a", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "CROSSROADS_TEST_UNSET_KEY"},
                         {"name": "b", "base_url": "http://127.0.0.1:9/v1", "price_per_mtok_in": 1}],
              "routes": {"auto": {"router_file": "default", "learner": "linucb"}}, "store": "sqlite://here.db",
              **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_check_reports_without_serving(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CROSSROADS_TEST_UNSET_KEY", raising=False)
    path = write_config(tmp_path / "c.yaml")
    assert main(["config", "check", str(path)]) == 1  # valid, but a key is missing
    out = capsys.readouterr().out
    assert f"store: SQLite file {tmp_path / 'here.db'}" in out and "$CROSSROADS_TEST_UNSET_KEY is not set" in out
    assert not (tmp_path / "here.db").exists()  # checked, not opened
    monkeypatch.setenv("CROSSROADS_TEST_UNSET_KEY", "sk-x")
    assert main(["config", "check", str(path)]) == 0
    bad = write_config(tmp_path / "bad.yaml", rotes={})
    assert main(["config", "check", str(bad)]) == 2
    assert "unknown keys ['rotes']" in capsys.readouterr().err


def test_serve_binds_first_then_says_what_it_serves_and_where_it_stores(tmp_path):
    path = write_config(tmp_path / "c.yaml")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "crossroads.cli.main", "serve", "--config", str(path), "--port",
                               str(port)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "serving" not in done.stderr
    server = subprocess.Popen([sys.executable, "-m", "crossroads.cli.main", "serve", "--config", str(path), "--port",
                               str(port)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        banner = read_until(server, "serving on")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"using config {path}" in banner and f"store: SQLite file {tmp_path / 'here.db'}" in banner
    assert "a: http://127.0.0.1:9/v1" in banner and "the pretrained default router with the linucb learner" in banner
    assert "warning: $CROSSROADS_TEST_UNSET_KEY is not set" in banner
    assert (tmp_path / "here.db").exists()


def read_until(process: subprocess.Popen, marker: str, timeout_s: float = 120) -> str:
    """What ``process`` wrote to standard error up to the line holding ``marker``."""
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError("".join(lines))


def test_calibrate_prints_the_config_lines_to_paste(tmp_path, capsys):
    router = tmp_path / "knn.npz"
    assert main(["train", "--dataset", MMLU_FIXTURE, "--router", "knn:k=2", "--out", str(router)]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--dataset", MMLU_FIXTURE, "--router-file", str(router), "--strong-share", "0.4"]) == 0
    out = capsys.readouterr().out
    name = re.search(r"RouteLLM model name: (router-knn-[0-9.]+)", out).group(1)
    assert f"routellm: {{strong: gpt-4-1106-preview, weak: mistralai/Mixtral-8x7B-Instruct-v0.1, routers: {{knn: {router}}}}}" in out
    assert name.startswith("router-knn-") and "calibrate again after retraining" in out
