"""Where a saved router came from: its data, the command that trained it, counts and later metrics.

Written as ``FILE.json`` beside ``FILE.npz`` by ``crossroads train``; benchmarks add the
metrics they measure with :func:`add_metrics`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from pathlib import Path

from crossroads.data.dataset import RoutingDataset
from crossroads.errors import CrossroadsError
from crossroads.routers.base import Router


def provenance_path(router_file: str | Path) -> Path:
    return Path(router_file).with_suffix(".json")


def write_provenance(router_file: Path, router: Router, dataset: RoutingDataset, *, command: list[str],
                     data: list[str], excluded: list[str], removed: int) -> Path:
    from crossroads import __version__

    record = {
        "router": router.name,
        "params": router.get_params(),
        "file_sha256": hashlib.sha256(Path(router_file).read_bytes()).hexdigest(),
        "trained_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "crossroads_version": __version__,
        "command": " ".join(command),
        "data": data,
        "excluded_questions_of": excluded,
        "training_queries_removed": removed,
        "queries": dataset.n_queries,
        "queries_by_source": dict(Counter(source.split("/")[0] for source in dataset.sources)),
        "models": dataset.model_names,
        "embedder": router.embedder_,
        "metrics": {},
    }
    path = provenance_path(router_file)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_provenance(router_file: str | Path) -> dict:
    path = provenance_path(router_file)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CrossroadsError(f"{path}: no provenance beside {router_file} (crossroads train writes it)") from None
    except json.JSONDecodeError as exc:
        raise CrossroadsError(f"{path}: corrupt provenance file ({exc})") from None


def add_metrics(router_file: str | Path, name: str, metrics: dict, command: str) -> None:
    """Record ``metrics`` measured by ``command`` under ``name`` in the router's provenance."""
    record = read_provenance(router_file)
    record.setdefault("metrics", {})[name] = {"command": command, **metrics}
    provenance_path(router_file).write_text(json.dumps(record, indent=1) + "\n")
