"""Files crossroads ships or installs for users with no data of their own: the bottom layer, importing nothing of crossroads'.

``default.npz`` is the pretrained ``default`` router, an ``irt`` router trained on public
recorded outcomes (RouterBench, MMLU-Pro and RouterDC's non-MMLU, non-GSM8K sets, with
every question that recurs in MMLU or GSM8K removed; LLMRouter is left out because it
mixes in GSM8K training questions); it places any model by its price and tier, so it
routes among models it never saw.  ``default.json`` beside it records the data, the
command that trained it and its measured metrics.  Load it with
``crossroads.routers.load_router("default")``.  gemma-3-270m's weights are in
:mod:`crossroads.pretrained.gemma`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The name that stands for the pretrained default router wherever a router file is asked for.
DEFAULT_ROUTER_NAME = "default"


def default_router_path() -> Path:
    return Path(str(resources.files("crossroads.pretrained").joinpath("default.npz")))


def router_path(path: str | Path) -> Path:
    """``path``, or the pretrained default router's file for the name ``default``."""
    return default_router_path() if str(path) == DEFAULT_ROUTER_NAME else Path(path)
