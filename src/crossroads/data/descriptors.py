"""Model descriptors: what is known about an LLM before any of its outcomes are seen.

A descriptor holds a model's price, size, tier (frontier, large, medium, small),
whether it is instruction-tuned, its specialty, its published benchmark scores and a
one-line description.  Routers that generalise to new models (``irt``) turn
descriptors into model vectors, so a model that joins the pool is placed among the
models they were trained on.

Descriptors come from the built-in catalogue (``model_catalog.json``, public model
cards and price lists, names and aliases as the published datasets spell them) and
from the user, who can describe any model by price and tier:
``name:price=2.5/10,tier=frontier`` (US$ per million input/output tokens).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from importlib import resources

import numpy as np

from crossroads.data.dataset import ModelInfo
from crossroads.data.pricing import size_from_name
from crossroads.errors import CrossroadsError
from crossroads.objective.cost import Price
from crossroads.registry import Spec

TIERS = ("small", "medium", "large", "frontier")
SPECIALTIES = ("general", "code", "math", "chinese", "qa")
#: Typical blended price (US$ per million tokens) and size (billions) of a tier, for
#: descriptors that give a tier but not a price or a size.
TIER_PRICE_USD = {"small": 0.2, "medium": 0.6, "large": 1.5, "frontier": 15.0}
TIER_PARAMS_BILLION = {"small": 7.0, "medium": 35.0, "large": 75.0, "frontier": 400.0}
#: The largest open model of each tier, for descriptors that give only a size.
TIER_MAX_PARAMS_BILLION = {"small": 12.0, "medium": 50.0, "large": 150.0}

#: Descriptor features a router can use, in vector order (see :func:`feature_matrix`).
FEATURE_GROUPS = {
    "price": ("log10_price",),
    "tier": ("tier",),
    "size": ("log10_params",),
    "instruct": ("instruct",),
    "specialty": tuple(f"specialty_{s}" for s in SPECIALTIES[1:]),
    "scores": ("mmlu", "gsm8k"),
}


@dataclass(frozen=True)
class ModelDescriptor:
    """What is known of one model; None where unknown."""

    name: str
    tier: str | None = None
    price_per_mtok_in: float | None = None
    price_per_mtok_out: float | None = None
    params_billion: float | None = None
    instruct: bool | None = None
    specialty: str = "general"
    mmlu: float | None = None
    gsm8k: float | None = None
    description: str = ""
    canonical: str = ""

    def __post_init__(self) -> None:
        if self.tier is not None and self.tier not in TIERS:
            raise CrossroadsError(f"model {self.name!r}: tier {self.tier!r} is not one of {', '.join(TIERS)}")
        if self.specialty not in SPECIALTIES:
            raise CrossroadsError(
                f"model {self.name!r}: specialty {self.specialty!r} is not one of {', '.join(SPECIALTIES)}"
            )

    @property
    def key(self) -> str:
        """The name shared by every alias of the model (its catalogue name), else its own name."""
        return self.canonical or self.name

    @property
    def blended_price(self) -> float | None:
        """Mean of input and output price in US$ per million tokens, None when unpriced."""
        if self.price_per_mtok_in is None or self.price_per_mtok_out is None:
            return None
        return (self.price_per_mtok_in + self.price_per_mtok_out) / 2

    @property
    def resolved_tier(self) -> str:
        """The tier, or the tier its price or size suggests."""
        if self.tier:
            return self.tier
        price = self.blended_price
        if price is not None:
            return min(TIER_PRICE_USD, key=lambda t: abs(math.log10(max(price, 1e-3)) - math.log10(TIER_PRICE_USD[t])))
        size = self.params_billion
        if size is not None:
            return next((tier for tier, limit in TIER_MAX_PARAMS_BILLION.items() if size <= limit), "frontier")
        raise CrossroadsError(
            f"model {self.name!r} is not in crossroads' catalogue and has no tier, price or size: describe it as "
            f"{self.name}:price=IN/OUT,tier={'|'.join(TIERS)}"
        )

    @property
    def price(self) -> Price:
        """The list price, or its tier's typical price where the descriptor gives none."""
        typical = TIER_PRICE_USD[self.resolved_tier]
        price_in = typical if self.price_per_mtok_in is None else self.price_per_mtok_in
        price_out = typical if self.price_per_mtok_out is None else self.price_per_mtok_out
        basis = "list price" if self.blended_price is not None else f"typical price of a {self.resolved_tier} model"
        return Price(price_in, price_out, basis)

    def model_info(self) -> ModelInfo:
        return ModelInfo(self.name, self.price_per_mtok_in, self.price_per_mtok_out, self.description)


@lru_cache(maxsize=1)
def catalog() -> dict[str, ModelDescriptor]:
    """The built-in catalogue, by every name and alias (lower case)."""
    text = resources.files("crossroads.data").joinpath("model_catalog.json").read_text(encoding="utf-8")
    entries = json.loads(text)["models"]
    table: dict[str, ModelDescriptor] = {}
    for name, entry in entries.items():
        descriptor = ModelDescriptor(
            name=name,
            tier=entry.get("tier"),
            price_per_mtok_in=entry.get("price_per_mtok_in"),
            price_per_mtok_out=entry.get("price_per_mtok_out"),
            params_billion=entry.get("params_billion"),
            instruct=entry.get("instruct"),
            specialty=entry.get("specialty") or "general",
            mmlu=entry.get("mmlu"),
            gsm8k=entry.get("gsm8k"),
            description=entry.get("description") or "",
            canonical=name,
        )
        for alias in [name, *entry.get("aliases", [])]:
            table[alias.lower()] = descriptor
    return table


def describe(model: str | ModelInfo | ModelDescriptor) -> ModelDescriptor:
    """The descriptor of ``model``: the catalogue's under the model's own name, completed by what it states.

    Prices a :class:`ModelInfo` carries (a dataset's price table) take precedence over
    the catalogue's; a name absent from the catalogue keeps only those prices, the size
    its name states (``Llama-2-13b``) and the tier they suggest.
    """
    if isinstance(model, ModelDescriptor):
        return model
    info = model if isinstance(model, ModelInfo) else ModelInfo(model)
    known = catalog().get(info.name.lower())
    base = replace(known, name=info.name) if known else ModelDescriptor(info.name, description=info.description)
    if info.price_per_mtok_in is not None and info.price_per_mtok_out is not None:
        base = replace(base, price_per_mtok_in=info.price_per_mtok_in, price_per_mtok_out=info.price_per_mtok_out)
    if base.params_billion is None and known is None:
        stated = size_from_name(info.name)
        base = replace(base, params_billion=stated[0] if stated else None)
    return base


def parse_pool(text: str) -> list[ModelDescriptor]:
    """Models from ``name[:price=IN/OUT,tier=T,size=B,instruct=yes][;name...]`` (also comma-free lists of names).

    Each model may be a catalogue name alone (``gpt-4o;gpt-4o-mini``) or described:
    ``price`` in US$ per million tokens (one figure for both, or IN/OUT), ``tier`` one of
    small/medium/large/frontier, ``size`` in billions of parameters.  Given fields
    override the catalogue's.
    """
    models = []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        spec = Spec.parse(item, "pool entry")
        if spec.positional is not None:
            raise CrossroadsError(f"pool entry {item!r}: {spec.positional!r} is not key=value (price=IN/OUT, tier=..., "
                                  "size=B)")
        descriptor = describe(spec.name)
        fields: dict = {}
        for key, value in spec.params.items():
            fields.update(_pool_field(item, key, value))
        try:
            descriptor = replace(descriptor, **fields)
        except CrossroadsError as exc:
            raise CrossroadsError(f"pool entry {item!r}: {exc}") from None
        descriptor.resolved_tier  # noqa: B018 - raises for a model described by nothing
        models.append(descriptor)
    if not models:
        raise CrossroadsError("the pool is empty: name at least two models, e.g. --pool 'gpt-4o;gpt-4o-mini'")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise CrossroadsError(f"the pool names a model twice: {names}")
    return models


def _pool_field(item: str, key: str, value: str) -> dict:
    try:
        if key == "price":
            prices = [float(v) for v in value.split("/")]
            if len(prices) not in (1, 2) or min(prices) < 0:
                raise ValueError
            return {"price_per_mtok_in": prices[0], "price_per_mtok_out": prices[-1]}
        if key == "tier":
            return {"tier": value}
        if key == "size":
            return {"params_billion": float(value.lower().rstrip("b"))}
        if key == "instruct":
            return {"instruct": value.lower() in ("1", "yes", "true")}
        if key == "specialty":
            return {"specialty": value}
    except ValueError:
        raise CrossroadsError(
            f"pool entry {item!r}: {key}={value!r} is not valid (price=IN/OUT in US$ per million tokens, size=B)"
            + ("; separate models with ';'" if "," in value else "")
        ) from None
    raise CrossroadsError(f"pool entry {item!r}: unknown field {key!r}; use price, tier, size, instruct or specialty")


def feature_names(groups: Sequence[str]) -> list[str]:
    unknown = [g for g in groups if g not in FEATURE_GROUPS]
    if unknown:
        raise CrossroadsError(f"unknown descriptor features {unknown}; choose from {', '.join(FEATURE_GROUPS)}")
    return [name for group in groups for name in FEATURE_GROUPS[group]]


def feature_matrix(descriptors: Iterable[ModelDescriptor], groups: Sequence[str]) -> np.ndarray:
    """One row of raw descriptor features per model, columns :func:`feature_names` ``(groups)``.

    Unknown values are filled from the model's tier: its typical price and size, and for
    published scores the mean of that tier in the catalogue.
    """
    names = feature_names(groups)
    rows = []
    for d in descriptors:
        tier = d.resolved_tier
        price = d.blended_price if d.blended_price is not None else TIER_PRICE_USD[tier]
        size = d.params_billion if d.params_billion is not None else TIER_PARAMS_BILLION[tier]
        values = {
            "log10_price": math.log10(max(price, 1e-3)),
            "tier": float(TIERS.index(tier)),
            "log10_params": math.log10(max(size, 0.1)),
            "instruct": 1.0 if d.instruct or d.instruct is None else 0.0,
            "mmlu": (d.mmlu if d.mmlu is not None else _tier_mean("mmlu", tier)) / 100,
            "gsm8k": (d.gsm8k if d.gsm8k is not None else _tier_mean("gsm8k", tier)) / 100,
            **{f"specialty_{s}": float(d.specialty == s) for s in SPECIALTIES[1:]},
        }
        rows.append([values[n] for n in names])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(names))


@cache
def _tier_mean(score: str, tier: str) -> float:
    values = {d.key: getattr(d, score) for d in catalog().values() if d.tier == tier and getattr(d, score) is not None}
    if values:
        return float(np.mean(list(values.values())))
    return {"small": 55.0, "medium": 65.0, "large": 75.0, "frontier": 85.0}[tier]
