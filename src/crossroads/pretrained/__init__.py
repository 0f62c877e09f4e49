"""The pretrained ``default`` router shipped with crossroads, for users with no data of their own.

``default.npz`` is an ``irt`` router trained on public recorded outcomes (RouterBench,
MMLU-Pro and RouterDC's non-MMLU, non-GSM8K sets, with every question that recurs in
MMLU or GSM8K removed; LLMRouter is left out because it mixes in GSM8K training
questions); it places any model by its price and tier, so it
routes among models it never saw.  ``default.json`` beside it records the data, the
command that trained it and its measured metrics.  It loads with numpy alone.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEFAULT_ROUTER_NAME = "default"


def default_router_path() -> Path:
    return Path(str(resources.files("crossroads.pretrained").joinpath("default.npz")))


def load_default_router():
    """The pretrained default router (an ``irt`` router; add the pool with ``add_models``)."""
    from crossroads.routers import load_router

    return load_router(default_router_path())


def default_provenance() -> dict:
    from crossroads.routers.provenance import read_provenance

    return read_provenance(default_router_path())
