"""Read published routing data into a RoutingDataset, from a ``FORMAT:PATH`` spec.

>>> sorted(FORMATS)  # doctest: +NORMALIZE_WHITESPACE
['crossroads', 'llmrouter', 'mmlu-pro', 'routellm-gsm8k', 'routellm-mmlu', 'routellm-mtbench', 'routerbench', 'routerdc']
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from crossroads.errors import CrossroadsError, DataFormatError

if TYPE_CHECKING:  # numpy loads only when data is read, not when the CLI starts
    from crossroads.data.dataset import RoutingDataset

#: Format name -> (module, loader function, what PATH is).
FORMATS: dict[str, tuple[str, str, str]] = {
    "routellm-mmlu": ("crossroads.data.importers.routellm", "load_mmlu", "directory with responses/mmlu_<subject>.csv"),
    "routellm-gsm8k": ("crossroads.data.importers.routellm", "load_gsm8k", "gsm8k_responses.csv or its directory"),
    "routellm-mtbench": ("crossroads.data.importers.routellm_mtbench", "load_mtbench", "directory with question.jsonl and judgements.jsonl"),
    "routerbench": ("crossroads.data.importers.routerbench", "load_routerbench", "a RouterBench CSV file or a directory of them"),
    "mmlu-pro": ("crossroads.data.importers.mmlu_pro", "load_mmlu_pro", "directory of model_outputs_<model>_5shots.zip"),
    "llmrouter": ("crossroads.data.importers.llmrouter", "load_llmrouter", "LLMRouter JSON file (default_llm.json beside it)"),
    "routerdc": ("crossroads.data.importers.routerdc", "load_routerdc", "RouterDC JSON file or directory of <task>_train.json"),
    "crossroads": ("crossroads.data.jsonl", "read_jsonl", "crossroads JSONL file"),
}


def known_formats() -> str:
    """One line per format: its name and what its PATH should be."""
    return "\n".join(f"  {name:<17} {what}" for name, (_, _, what) in FORMATS.items())


def parse_spec(spec: str) -> tuple[str, Path]:
    """Split ``FORMAT:PATH`` into the format name and the path."""
    name, sep, path = spec.partition(":")
    if not sep or not path:
        raise CrossroadsError(f"dataset {spec!r} should be FORMAT:PATH, for example routerbench:../shared/data/routerbench; formats:\n{known_formats()}")
    if name not in FORMATS:
        raise CrossroadsError(f"unknown dataset format {name!r} in {spec!r}; known formats:\n{known_formats()}")
    return name, Path(path).expanduser()


def loader(name: str) -> Callable[..., RoutingDataset]:
    """The function that reads format ``name``."""
    module, function, _ = FORMATS[name]
    return getattr(importlib.import_module(module), function)


def load_dataset(spec: str, *, progress: bool = False, **options) -> RoutingDataset:
    """The dataset at ``spec`` (``FORMAT:PATH``); ``options`` go to that format's loader.

    ``progress=True`` shows a progress bar for long reads (given only to loaders that
    have one).  Raises CrossroadsError for an unknown format or option, and
    DataFormatError naming the file and row when the data does not match its format.
    """
    name, path = parse_spec(spec)
    if not path.exists():
        raise DataFormatError(path, f"{FORMATS[name][2]} (format {name})", found="no such file or directory")
    read = loader(name)
    accepted = [p for p in inspect.signature(read).parameters if p != "path"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(p for p in accepted if p != "progress") or "none"
        raise CrossroadsError(f"format {name} has no option {', '.join(unknown)}; its options: {allowed}")
    if "progress" in accepted:
        options["progress"] = progress
    try:
        return read(path, **options)
    except OSError as exc:  # unreadable file, a directory where a file belongs, ...
        raise DataFormatError(exc.filename or path, f"readable {name} data ({FORMATS[name][2]})", found=exc.strerror or str(exc)) from None


def load_datasets(specs: list[str], *, progress: bool = False) -> RoutingDataset:
    """Several datasets combined into one (pool = union of pools; see ``dataset.combine``)."""
    from crossroads.data.dataset import combine

    return combine([load_dataset(spec, progress=progress) for spec in specs])
