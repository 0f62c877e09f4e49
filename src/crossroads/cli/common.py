"""Options and steps that several commands share: datasets, models, embeddings."""

from __future__ import annotations

import argparse
from contextlib import contextmanager

from rich.console import Console

from crossroads.paths import shared_data_dir

DATASET_HELP = "dataset as FORMAT:PATH, e.g. routerbench:../shared/data/routerbench (repeat to combine several)"


def default_dataset() -> str:
    """The embedded default: RouteLLM's MMLU outcomes (GPT-4 vs Mixtral) from the shared data."""
    return f"routellm-mmlu:{shared_data_dir() / 'routellm' / 'mmlu'}"


def add_data_options(parser: argparse.ArgumentParser, required: bool = False) -> None:
    add_dataset_formats(parser)
    parser.add_argument("--dataset", "-d", action="append", required=required, metavar="FORMAT:PATH",
                        help=DATASET_HELP + ("" if required else f" (default: {default_dataset()})"))
    parser.add_argument("--models", metavar="A,B,...", help="restrict the pool to these models (comma-separated)")
    parser.add_argument("--embedder", default="minilm-onnx",
                        help="minilm-onnx (default, offline), minilm-st, or openai:<model>[@<base_url>]")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")


def add_dataset_formats(parser: argparse.ArgumentParser) -> None:
    """List the dataset formats under the command's help, for its --dataset option."""
    from crossroads.data.importers import known_formats

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = f"dataset formats (--dataset FORMAT:PATH[,option=value,...]):\n{known_formats()}"


def at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""
    def number(text: str) -> int:
        if not text.lstrip("-").isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= {minimum}")
        return int(text)

    return number


def checked_specs(registry, texts: list[str]) -> list:
    """The specs of ``registry`` (routers, learners) in ``texts``, each built once so that every option's
    type and range is checked before any work starts."""
    specs = [registry.spec(text) for text in texts]
    for spec in specs:
        registry.build(spec)
    return specs


def load_data(specs: list[str] | None, models: str | None):
    """The combined dataset of ``specs`` (default: RouteLLM MMLU), restricted to ``models``."""
    from crossroads.errors import CrossroadsError
    from crossroads.store.export import load_datasets  # every format, and store:URL

    if not specs and not (shared_data_dir() / "routellm" / "mmlu").is_dir():
        raise CrossroadsError(f"the default dataset, RouteLLM's MMLU outcomes, is not at {shared_data_dir().resolve()}: "
                              "set CROSSROADS_DATA to the shared data directory (the one holding routellm/), "
                              "or name a dataset with --dataset FORMAT:PATH")
    dataset = load_datasets(specs or [default_dataset()], progress=True)
    if models:
        dataset = dataset.select_models([name.strip() for name in models.split(",") if name.strip()])
    return dataset


def embed(prompts: list[str], embedder_spec: str, cache: bool = True):
    """Embeddings of ``prompts`` with a progress bar; returns (embeddings, embedder name)."""
    from crossroads.embeddings import make_embedder

    embedder = make_embedder(embedder_spec, cache=cache)
    return embedder.embed(prompts, progress=True), embedder.name


@contextmanager
def step_progress(description: str, total: int):
    """A progress bar on standard error; yields a callback that advances it by one named step."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda step: progress.update(task, advance=1, description=f"{description}: {step}")


class AdminClient:
    """Calls to a running server's admin endpoints (``crossroads keys``, ``promote``); a refusal or an unreachable
    server becomes one clear CrossroadsError."""

    def __init__(self, server: str, key: str, timeout_s: float = 30.0):
        self.base = server.rstrip("/").removesuffix("/v1")
        self.headers = {"Authorization": f"Bearer {key}"}
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls, server: str, key_env: str, timeout_s: float = 30.0) -> AdminClient:
        """The client with the admin key held in ``$key_env`` (the commands' ``--admin-key-env``)."""
        import os

        from crossroads.errors import CrossroadsError

        key = os.environ.get(key_env)
        if not key:
            raise CrossroadsError(f"${key_env} is not set: put the server's admin key there (or name another "
                                  "variable with --admin-key-env)")
        return cls(server, key, timeout_s)

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
        import httpx

        from crossroads.errors import CrossroadsError

        url = self.base + path
        try:
            response = httpx.request(method, url, json=body, params=params, headers=self.headers,
                                     timeout=self.timeout_s)
        except httpx.HTTPError as error:
            raise CrossroadsError(f"cannot reach {url} ({error}): is `crossroads serve` running there?") from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400:
            message = (answer.get("error") or {}).get("message") if isinstance(answer, dict) else None
            raise CrossroadsError(f"{method} {url} refused ({response.status_code}): "
                                  f"{message or response.text[:200]}")
        return answer
