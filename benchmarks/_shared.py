"""Helpers the benchmark scripts share: data location, machine facts, tables, results files.

Not part of the ``crossroads`` package; the scripts import it from their own directory.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossroads.paths import shared_data_dir

RESULTS_DIR = Path(__file__).parent / "results"


def missing_data(paths: list[Path]) -> list[Path]:
    """The paths that do not exist; the scripts print them and skip (exit 0)."""
    return [path for path in paths if not path.exists()]


def skip_message(missing: list[Path]) -> str:
    return (f"skipped: shared data not found: {', '.join(map(str, missing))} "
            f"(set CROSSROADS_DATA to the shared data directory; now {shared_data_dir()})")


def machine() -> dict:
    """Facts that make timings comparable: cores, load average, versions, date."""
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def load_embedded(spec: str, rows: Callable | None = None):
    """The dataset at ``spec`` (``FORMAT:PATH``), restricted with ``rows(dataset)`` if given, and its embeddings.

    Embeddings come from the default embedder behind its disk cache, so a second run
    does not embed again.  Returns (dataset, embeddings, embedder name).
    """
    from crossroads.data.importers import load_dataset
    from crossroads.embeddings import make_embedder

    dataset = load_dataset(spec)
    if rows is not None:
        dataset = rows(dataset)
    embedder = make_embedder()
    return dataset, embedder.embed(dataset.prompts, progress=True), embedder.name


class TooSlow(Exception):
    """Raised from the progress callback to abandon a router that would exceed its time budget."""


def evaluate_each(specs, dataset, embeddings, *, seed: int, pair, embedder: str, budget_s: float | None = None,
                  folds: int = 5, log: Callable[[str], None] = print):
    """Cross-validate each router in its own ``evaluate`` call and merge the entries into one Evaluation.

    Returns (evaluation, seconds per router label, skipped {label: reason}).  A router whose
    projected time (mean fold time x folds) exceeds ``budget_s`` is abandoned after the fold
    that shows it, and listed as skipped.  The baselines (random, single models, oracle)
    come from one extra call with no router.
    """
    from crossroads.evaluate.harness import Evaluation, evaluate
    from crossroads.routers import ROUTERS

    entries, seconds, skipped = [], {}, {}
    for spec in map(ROUTERS.spec, specs):
        started = time.perf_counter()
        done = [0, 0.0]  # folds done, seconds at the last fold

        def on_step(step: str, started=started, done=done) -> None:
            elapsed = time.perf_counter() - started
            done[0], done[1] = done[0] + 1, elapsed
            log(f"  {step} ({elapsed:.0f} s)")
            if budget_s is not None and done[0] < folds and elapsed / done[0] * folds > budget_s:
                raise TooSlow(f"projected {elapsed / done[0] * folds:.0f} s for {folds} folds "
                              f"(> budget {budget_s:.0f} s) after {done[0]} fold(s)")

        try:
            run = evaluate([spec], dataset, embeddings, folds=folds, pair=pair, seed=seed, embedder=embedder,
                           on_step=on_step)
        except TooSlow as reason:
            skipped[spec.label] = str(reason)
            log(f"  {spec.label}: dropped, {reason}")
            continue
        seconds[spec.label] = done[1]  # fits and predictions only, not the baselines evaluate() adds
        entries.append(run.entries[0])
    base = evaluate([], dataset, embeddings, folds=folds, pair=pair, seed=seed, embedder=embedder)
    return Evaluation(base.test, base.pair, entries + base.entries, base.setup), seconds, skipped


# -- tables ------------------------------------------------------------------------------
def cell(value, percent: bool = False, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    return f"{100 * value:.1f}%" if percent else f"{value:.{digits}f}"


@dataclass
class Table:
    """A titled table printed with rich and written as markdown."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])

    def print(self) -> None:
        from rich.console import Console
        from rich.table import Table as RichTable

        console = Console(width=max(Console().width, 150))
        table = RichTable(title=self.title, title_justify="left")
        for k, column in enumerate(self.columns):
            table.add_column(column, justify="left" if k == 0 else "right")
        for row in self.rows:
            table.add_row(*row)
        console.print(table)
        for note in self.notes:
            console.print(f"  {note}", highlight=False)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def run_parts(parts: list[str], runs: dict[str, Callable[[], tuple[object, Table]]], results: dict,
              tables: list) -> None:
    """Run each part of ``runs`` named in ``parts``: its figures go to ``results[part]`` (with ``<part>_seconds``),
    its table is printed and appended to ``tables``."""
    for part, run in runs.items():
        if part in parts:
            started = time.perf_counter()
            results[part], table = run()
            results[f"{part}_seconds"] = time.perf_counter() - started
            table.print()
            tables.append(table)


def write_results(name: str, results: dict, title: str, intro: list[str], tables: list[Table | str],
                  directory: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write ``<name>.json`` and the markdown section ``<name>.md`` (intro lines, then tables)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(clean(results), indent=1, allow_nan=False) + "\n")
    parts = [f"## {title}", "", *intro, ""]
    for table in tables:
        parts += [table.markdown() if isinstance(table, Table) else table, ""]
    md_path.write_text("\n".join(parts).rstrip() + "\n")
    return json_path, md_path


def clean(value):
    """``value`` with NaN/inf as None and numpy scalars as Python numbers, for strict JSON."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@contextmanager
def twin_process(spec: str, *options: str):
    """``crossroads twin`` on ``spec`` (with ``options``) in its own process, so that it takes no CPU time from
    this one; its URL."""
    import subprocess
    import sys

    from crossroads.upstream.servers import free_port

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "crossroads.cli.main", "twin", "-d", spec, "--port", str(port),
                                *options], stdout=subprocess.PIPE, text=True)
    try:
        if "twin of" not in (process.stdout.readline() if process.stdout else ""):
            raise RuntimeError(f"crossroads twin did not start on {spec}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.wait(timeout=10)


def backend_stores(backends: str, folder: str):
    """``(backend, store URL)`` for each of the comma-separated ``backends`` (sqlite, postgresql): a fresh SQLite file
    in ``folder`` or a fresh database on a PostgreSQL server started for it (stopped when the next is asked for);
    a backend that cannot run here is skipped with a line saying why."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from postgres_server import PostgresServer, fresh_database

    for backend in backends.split(","):
        if backend != "postgresql":
            yield backend, f"sqlite://{folder}/store-{backend}.db"
            continue
        if PostgresServer.available() is not None:
            print(f"postgresql skipped: {PostgresServer.available()}")
            continue
        with PostgresServer() as server:
            yield backend, fresh_database(server.url)
