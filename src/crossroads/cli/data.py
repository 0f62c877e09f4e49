"""``crossroads data``: inspect published routing data and convert it to crossroads' JSONL format."""

from __future__ import annotations

import argparse
import math
from collections import Counter

from crossroads.cli.common import DATASET_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its ``convert`` and ``info`` subcommands."""
    from crossroads.data.importers import known_formats

    formats = f"dataset formats (FORMAT:PATH):\n{known_formats()}"
    data = subparsers.add_parser(
        "data",
        help="inspect routing datasets and convert them to crossroads' JSONL format",
        description="Read recorded outcomes of LLMs on benchmark queries (RouteLLM, RouterBench, MMLU-Pro, "
        "LLMRouter, RouterDC or crossroads JSONL), summarise them or convert them to one JSONL file.",
        epilog=formats,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    convert = commands.add_parser(
        "convert",
        help="write one or more datasets to a crossroads JSONL file",
        description="Read each --dataset, combine them (the pool is the union of their models; a model "
        "absent from a dataset has missing outcomes there) and write crossroads' JSONL format, "
        "described in docs/data-format.md.",
        epilog=formats,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("--dataset", "-d", action="append", required=True, metavar="FORMAT:PATH", help=DATASET_HELP)
    convert.add_argument("--out", "-o", required=True, metavar="FILE.jsonl", help="the JSONL file to write")
    convert.set_defaults(func=run_convert)

    info = commands.add_parser(
        "info",
        help="summarise datasets: rows, models, mean quality and cost, missing outcomes",
        description="Print how many queries and models the datasets hold and, per model, the mean quality, "
        "mean cost in US$ per query, the share of missing outcomes and whether costs are estimated.",
        epilog=formats,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("--dataset", "-d", action="append", required=True, metavar="FORMAT:PATH", help=DATASET_HELP)
    info.set_defaults(func=run_info)


def run_convert(args: argparse.Namespace) -> int:
    """Load ``args.dataset`` and write it to ``args.out``."""
    from rich.console import Console

    from crossroads.data.importers import load_datasets
    from crossroads.data.jsonl import write_jsonl

    dataset = load_datasets(args.dataset, progress=True)
    path = write_jsonl(dataset, args.out)
    Console().print(f"Wrote {dataset.n_queries:,} queries x {dataset.n_models} models to {path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Load ``args.dataset`` and print its summary."""
    from rich.console import Console

    from crossroads.data.importers import load_datasets

    dataset = load_datasets(args.dataset, progress=True)
    console = Console()
    console.print(summary_table(dataset))
    console.print(sources_table(dataset))
    return 0


def summary_table(dataset):
    """A rich table with one line per model of ``dataset``."""
    import numpy as np
    from rich.table import Table

    n_categories = len(set(dataset.categories))
    table = Table(
        title=f"{dataset.n_queries:,} queries x {dataset.n_models} models, {n_categories} categories",
        caption="quality and cost_usd: means per query over recorded outcomes; "
        "missing: share of queries without an outcome; price: US$ per million tokens in/out",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("model", overflow="fold", ratio=3)
    for header in ("quality", "cost_usd", "missing"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("cost", no_wrap=True)
    table.add_column("price", justify="right", no_wrap=True)
    for j, model in enumerate(dataset.models):
        quality = dataset.quality[:, j]
        cost = dataset.cost_usd[:, j]
        table.add_row(
            model.name,
            _mean(quality, "{:.3f}"),
            _mean(cost, "{:.2e}"),
            f"{np.isnan(quality).mean():.2%}" if len(quality) else "-",
            "estimated" if dataset.cost_estimated[j] else "recorded",
            f"{_price(model.price_per_mtok_in)}/{_price(model.price_per_mtok_out)}",
        )
    return table


def sources_table(dataset):
    """A rich table of query counts per format, with how many files each came from."""
    from rich.table import Table

    queries: Counter[str] = Counter()
    files: dict[str, set[str]] = {}
    for source in dataset.sources:
        fmt, _, file = source.partition("/")
        queries[fmt] += 1
        files.setdefault(fmt, set()).add(file)
    table = Table("format", "files", "queries", title="sources", title_justify="left")
    for fmt, count in queries.items():
        table.add_row(fmt, str(len(files[fmt])), f"{count:,}")
    return table


def _mean(values, template: str) -> str:
    present = values[values == values]  # drop NaN
    return template.format(present.mean()) if len(present) else "-"


def _price(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:g}"
