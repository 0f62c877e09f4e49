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
