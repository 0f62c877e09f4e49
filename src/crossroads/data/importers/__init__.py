"""Read published routing data into a RoutingDataset, from a ``FORMAT:PATH[,option=value...]`` spec.

>>> sorted(FORMATS.names)  # doctest: +NORMALIZE_WHITESPACE
['arena-bench', 'crossroads', 'llmrouter', 'logs', 'mmlu-pro', 'routellm-gsm8k', 'routellm-mmlu', 'routellm-mtbench',
 'routerbench', 'routerdc']

``store:URL`` (a server's store, read without a file) is a dataset too, but the store sits above
this layer: :func:`crossroads.store.export.load_datasets` reads it (and every format here), and the
``crossroads`` command loads its datasets through that.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

from crossroads.errors import CrossroadsError, DataFormatError
from crossroads.registry import Registry, Spec

if TYPE_CHECKING:  # numpy loads only when data is read, not when the CLI starts
    from crossroads.data.dataset import RoutingDataset

#: The formats by name: each a loader ``load(path, **options)``, described by what its PATH is.
FORMATS = Registry(
    "dataset format",
    {"routellm-mmlu": "crossroads.data.importers.routellm:load_mmlu",
     "routellm-gsm8k": "crossroads.data.importers.routellm:load_gsm8k",
     "routellm-mtbench": "crossroads.data.importers.routellm_mtbench:load_mtbench",
     "arena-bench": "crossroads.data.importers.arena_bench:load_arena_bench",
     "routerbench": "crossroads.data.importers.routerbench:load_routerbench",
     "mmlu-pro": "crossroads.data.importers.mmlu_pro:load_mmlu_pro",
     "llmrouter": "crossroads.data.importers.llmrouter:load_llmrouter",
     "routerdc": "crossroads.data.importers.routerdc:load_routerdc",
     "crossroads": "crossroads.data.jsonl:read_jsonl",
     "logs": "crossroads.data.jsonl:read_logs"},
    {"routellm-mmlu": "directory with responses/mmlu_<subject>.csv",
     "routellm-gsm8k": "gsm8k_responses.csv or its directory",
     "routellm-mtbench": "directory with question.jsonl and judgements.jsonl",
     "arena-bench": "directory with question.jsonl and model_judgment/ (arena-hard-auto)",
     "routerbench": "a RouterBench CSV file or a directory of them",
     "mmlu-pro": "directory of model_outputs_<model>_5shots.zip",
     "llmrouter": "LLMRouter JSON file (default_llm.json beside it)",
     "routerdc": "RouterDC JSON file or directory of <task>_train.json",
     "crossroads": "crossroads JSONL file",
     "logs": "a server's logs written by crossroads logs export (JSONL)"},
)
#: The store's format, read by ``crossroads.store.export`` (a layer above this one), and what its PATH is.
STORE_FORMAT = ("store", "a server's store URL, read directly: store:sqlite://crossroads.db[,route=R,quality_from=user]")
_EXAMPLE = "for example routerbench:../shared/data/routerbench"


def known_formats() -> str:
    """One line per format: its name and what its PATH should be."""
    lines = [f"  {name:<17} {FORMATS.descriptions[name]}" for name in FORMATS.names]
    return "\n".join([*lines, f"  {STORE_FORMAT[0]:<17} {STORE_FORMAT[1]}"])


def load_dataset(spec: str, *, progress: bool = False, **options) -> RoutingDataset:
    """The dataset at ``spec`` (``FORMAT:PATH``, options after the path: ``llmrouter:x.json,output_tokens=300``).

    ``options`` go to that format's loader too.  ``progress=True`` shows a progress bar
    for long reads (given only to loaders that have one).  Raises CrossroadsError for an
    unknown format or option, and DataFormatError naming the file and row when the data
    does not match its format.
    """
    parsed = Spec.parse(spec, "dataset")
    if parsed.name == STORE_FORMAT[0]:
        raise CrossroadsError(f"dataset {spec!r} is a store, which crossroads.data cannot read: load it with "
                              "crossroads.store.export.load_dataset (the crossroads command does)")
    if parsed.positional is None and "path" not in parsed.params:
        raise CrossroadsError(f"dataset {spec!r} should be FORMAT:PATH, {_EXAMPLE}; formats:\n{known_formats()}")
    read = FORMATS.load(parsed.name)
    checked = FORMATS.spec(parsed, **options)
    arguments = dict(checked.params)
    what = FORMATS.descriptions[parsed.name]
    path = Path(arguments.pop("path")).expanduser()
    if not path.exists():
        raise DataFormatError(path, f"{what} (format {parsed.name})", found="no such file or directory")
    if "progress" in inspect.signature(read).parameters:
        arguments["progress"] = progress
    try:
        return read(path, **arguments)
    except OSError as exc:  # unreadable file, a directory where a file belongs, ...
        raise DataFormatError(exc.filename or path, f"readable {parsed.name} data ({what})",
                              found=exc.strerror or str(exc)) from None


def load_datasets(specs: list[str], *, progress: bool = False) -> RoutingDataset:
    """Several datasets combined into one (pool = union of pools; see ``dataset.combine``)."""
    from crossroads.data.dataset import combine

    return combine([load_dataset(spec, progress=progress) for spec in specs])
