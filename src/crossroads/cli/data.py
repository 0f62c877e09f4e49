"""``crossroads data``: inspect published routing data and convert it to crossroads' JSONL format."""

from __future__ import annotations

import argparse
import json
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
        description="Read recorded outcomes of LLMs on benchmark queries (RouteLLM, Arena-Hard, RouterBench, "
        "MMLU-Pro, LLMRouter, RouterDC or crossroads JSONL), summarise them or convert them to one JSONL file.",
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
    info.add_argument("--json", action="store_true",
                      help="print the summary as JSON instead of tables: queries, categories, sources and per model "
                      "mean_quality, mean_cost_usd, missing_share, cost_estimated and prices (null where unknown)")
    info.set_defaults(func=run_info)


def run_convert(args: argparse.Namespace) -> int:
    """Load ``args.dataset`` and write it to ``args.out``."""
    from rich.console import Console

    from crossroads.data.jsonl import write_jsonl
    from crossroads.store.export import load_datasets  # every format, and store:URL

    dataset = load_datasets(args.dataset, progress=True)
    path = write_jsonl(dataset, args.out)
    Console().print(f"Wrote {dataset.n_queries:,} queries x {dataset.n_models} models to {path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Load ``args.dataset`` and print its summary, as tables or (``--json``) as JSON."""
    from crossroads.store.export import load_datasets  # every format, and store:URL

    dataset = load_datasets(args.dataset, progress=True)
    if args.json:
        print(json.dumps(summary(dataset), indent=1))
    else:
        print_whole(summary_table(dataset))
        print_whole(sources_table(dataset))
    return 0


def summary(dataset) -> dict:
    """What ``data info`` reports, as plain JSON values: counts, per-model means and sources."""
    return {
        "queries": dataset.n_queries,
        "categories": len(set(dataset.categories)),
        "models": model_summaries(dataset),
        "sources": source_counts(dataset),
    }


def model_summaries(dataset) -> list[dict]:
    """Per model: mean quality and cost (US$ per query) over recorded outcomes, share missing and prices.

    Values are plain floats and booleans, None where unknown, so the rows print as JSON as they are.
    """
    import numpy as np

    rows = []
    for j, model in enumerate(dataset.models):
        quality, cost = dataset.quality[:, j], dataset.cost_usd[:, j]
        rows.append({
            "name": model.name,
            "mean_quality": _mean(quality),
            "mean_cost_usd": _mean(cost),
            "missing_share": float(np.isnan(quality).mean()) if len(quality) else None,
            "cost_estimated": bool(dataset.cost_estimated[j]),
            "price_per_mtok_in": _known(model.price_per_mtok_in),
            "price_per_mtok_out": _known(model.price_per_mtok_out),
        })
    return rows


def source_counts(dataset) -> list[dict]:
    """Per dataset format: how many files and queries came from it."""
    queries: Counter[str] = Counter()
    files: dict[str, set[str]] = {}
    for source in dataset.sources:
        fmt, _, file = source.partition("/")
        queries[fmt] += 1
        files.setdefault(fmt, set()).add(file)
    return [{"format": fmt, "files": len(files[fmt]), "queries": count} for fmt, count in queries.items()]


def summary_table(dataset):
    """A rich table with one line per model of ``dataset``; model names are never wrapped."""
    from rich.table import Table

    n_categories = len(set(dataset.categories))
    table = Table(
        title=f"{dataset.n_queries:,} queries x {dataset.n_models} models, {n_categories} categories",
        caption="quality and cost_usd: means per query over recorded outcomes; "
        "missing: share of queries without an outcome; price: US$ per million tokens in/out",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("model", no_wrap=True)
    for header in ("quality", "cost_usd", "missing"):
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("cost", no_wrap=True)
    table.add_column("price", justify="right", no_wrap=True)
    for row in model_summaries(dataset):
        table.add_row(
            row["name"],
            _shown(row["mean_quality"], "{:.3f}"),
            _shown(row["mean_cost_usd"], "{:.2e}"),
            _shown(row["missing_share"], "{:.2%}"),
            "estimated" if row["cost_estimated"] else "recorded",
            f"{_shown(row['price_per_mtok_in'], '{:g}')}/{_shown(row['price_per_mtok_out'], '{:g}')}",
        )
    return table


def sources_table(dataset):
    """A rich table of query counts per format, with how many files each came from."""
    from rich.table import Table

    table = Table("format", "files", "queries", title="sources", title_justify="left")
    for row in source_counts(dataset):
        table.add_row(row["format"], str(row["files"]), f"{row['queries']:,}")
    return table


def print_whole(table) -> None:
    """Print a rich ``table`` without cutting or breaking a word, however narrow the terminal.

    Rich fits a wide table to the terminal by cutting cells.  Here, when a table does
    not fit, each column gets a fixed width: its longest cell, and its heading's
    longest word (the whole heading for a ``no_wrap`` column such as names), so
    headings wrap between words and nothing else wraps.  If that is still wider than
    the terminal, the borders go, and then the lines run past the terminal's edge.
    """
    from rich.console import Console

    console = Console()
    if _width(console, table) > console.width:
        for column in table.columns:
            heading = str(column.header)
            column.width = max([len(heading) if column.no_wrap else max(map(len, heading.split()), default=0),
                                *(len(str(cell)) for cell in column.cells)])
        if _width(console, table) > console.width:
            table.box = None
    Console(width=max(console.width, _width(console, table))).print(table)


def _width(console, table) -> int:
    """The columns ``table`` takes with every cell and heading on one line (or at its fixed widths)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def _mean(values) -> float | None:
    import numpy as np

    present = values[~np.isnan(values)]
    return float(present.mean()) if len(present) else None


def _known(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _shown(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)
