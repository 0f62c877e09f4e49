"""The prices of the models in the published datasets, for datasets that record no cost.

Prices are US$ per million tokens; a cost is estimated from them with
:func:`crossroads.objective.cost.cost_usd`.  Every estimate is marked ``cost_estimated``
in the dataset; docs/data-format.md explains the assumptions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from crossroads.errors import DataFormatError
from crossroads.objective.cost import Price

# Size tiers of serverless hosting for open-weight models (2024), in US$ per million
# tokens, input and output alike.  They match the per-size figures of Together AI's
# serverless price list of that year and the prices LLMRouter's default_llm.json
# gives its NVIDIA-hosted models (7-8B $0.20, 49-70B $0.90, Mixtral-8x7B $0.60, ...).
DENSE_TIERS_USD = ((4, 0.10), (8, 0.20), (21, 0.30), (41, 0.80), (80, 0.90), (110, 1.80))
MOE_TIERS_USD = ((56, 0.60), (176, 1.20), (480, 2.40))

_SIZE_BASIS = "size-based estimate: serverless price tier of a {size} model"


def size_based_price(params_billion: float, *, mixture_of_experts: bool = False) -> Price:
    """Price of an open-weight model from its (total) parameter count in billions."""
    tiers = MOE_TIERS_USD if mixture_of_experts else DENSE_TIERS_USD
    for limit, usd in tiers:
        if params_billion <= limit:
            break
    size = f"{params_billion:g}B {'mixture-of-experts' if mixture_of_experts else 'dense'}"
    return Price(usd, usd, _SIZE_BASIS.format(size=size))


_MOE_NAME = re.compile(r"(\d+)x(\d+(?:\.\d+)?)b", re.IGNORECASE)
_SIZE_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)b(?![a-z])", re.IGNORECASE)


def size_from_name(name: str) -> tuple[float, bool] | None:
    """Parameters in billions and whether it is a mixture of experts, as the name states them, else None."""
    moe = _MOE_NAME.search(name)
    if moe:
        experts, size = int(moe.group(1)), float(moe.group(2))
        # Mixtral-style experts share attention weights: 8x7B has about 47B parameters.
        return round(experts * size * 0.83, 1), True
    dense = _SIZE_NAME.search(name.replace("_", "-"))
    if dense:
        return float(dense.group(1)), False
    return None


def price_from_name(name: str) -> Price | None:
    """Size-based price of an open model whose name states its size (``Llama-2-13b``, ``8x7B``), else None."""
    stated = size_from_name(name)
    if stated is None:
        return None
    size, moe = stated
    return size_based_price(size, mixture_of_experts=moe)


def _list(usd_in: float, usd_out: float, where: str) -> Price:
    return Price(usd_in, usd_out, f"public list price: {where}")


def _tier(params_billion: float, moe: bool = False) -> Price:
    return size_based_price(params_billion, mixture_of_experts=moe)


#: Prices of the models in the published datasets, by the name the dataset uses.
#: Public list prices where the provider sells that exact model, otherwise the size
#: tier of its nominal parameter count (total parameters for mixtures of experts).
PRICE_TABLE: dict[str, Price] = {
    # RouteLLM pair
    "gpt-4-1106-preview": _list(10.0, 30.0, "OpenAI, gpt-4-1106-preview"),
    "mistralai/Mixtral-8x7B-Instruct-v0.1": _list(0.60, 0.60, "Together AI serverless Mixtral-8x7B-Instruct (also LLMRouter's table)"),
    # MMLU-Pro models (names as in model_outputs_<model>_5shots.zip)
    "DeepSeek-Coder-V2": _list(0.14, 0.28, "DeepSeek API, deepseek-coder (2024)"),
    "gemini-1.5-flash-002": _list(0.075, 0.30, "Google Gemini API, prompts up to 128k tokens (Oct 2024)"),
    "gemini-1.5-pro-002": _list(1.25, 5.00, "Google Gemini API, prompts up to 128k tokens (Oct 2024)"),
    "jamba-1.5-large": _list(2.00, 8.00, "AI21 Studio (2024)"),
    "c4ai-command-r-v01": _list(0.50, 1.50, "Cohere API, Command R (March 2024 release)"),
    "Mixtral-8x7B-Instruct-v0.1": _list(0.60, 0.60, "Together AI serverless Mixtral-8x7B-Instruct"),
    "Mixtral-8x7B-v0.1": _tier(46.7, moe=True),
    "Llama-2-7b-hf": _tier(7),
    "Llama-2-13b-hf": _tier(13),
    "Llama-2-70b-hf": _tier(70),
    "Meta-Llama-3-8B": _tier(8),
    "Meta-Llama-3-70B": _tier(70),
    "Meta-Llama-3_1-8B": _tier(8),
    "Meta-Llama-3_1-8B-Instruct": _tier(8),
    "Meta-Llama-3_1-70B": _tier(70),
    "Meta-Llama-3_1-70B-Instruct": _tier(70),
    "Mistral-7B-v0.1": _tier(7),
    "Mistral-7B-v0.2-hf": _tier(7),
    "Mistral-7B-Instruct-v0.1": _tier(7),
    "Mistral-7B-Instruct-v0.2": _tier(7),
    "mathstral-7B": _tier(7),
    "Phi-3-mini-4k-instruct": _tier(3.8),
    "Qwen1.5-7B-Chat": _tier(7),
    "Qwen1.5-72B-Chat": _tier(72),
    "Qwen1.5-110B": _tier(110),
    "Yi-6B": _tier(6),
    "Yi-6b-Chat": _tier(6),
    "Yi-34B": _tier(34),
    "gemma-7b": _tier(7),
    # RouterDC's seven open 7-8B models
    "mistralai/Mistral-7B-v0.1": _tier(7),
    "meta-math/MetaMath-Mistral-7B": _tier(7),
    "itpossible/Chinese-Mistral-7B-v0.1": _tier(7),
    "HuggingFaceH4/zephyr-7b-beta": _tier(7),
    "cognitivecomputations/dolphin-2.6-mistral-7b": _tier(7),
    "meta-llama/Meta-Llama-3-8B": _tier(8),
    "cognitivecomputations/dolphin-2.9-llama3-8b": _tier(8),
}


def price_for(name: str, overrides: dict[str, Price] | None = None) -> Price | None:
    """Price of model ``name``: ``overrides`` first, then :data:`PRICE_TABLE`, then its stated size."""
    if overrides and name in overrides:
        return overrides[name]
    return PRICE_TABLE.get(name) or price_from_name(name)


def read_price_file(path: str | Path) -> dict[str, Price]:
    """Prices from a JSON file mapping model name to its prices.

    Accepts LLMRouter's ``default_llm.json`` (``input_price``/``output_price``) and
    crossroads' own names (``price_per_mtok_in``/``price_per_mtok_out``), both in US$
    per million tokens.
    """
    path = Path(path)
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "a JSON price file", found="no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, "a JSON object of model prices", found=f"invalid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise DataFormatError(path, "a JSON object mapping model names to prices", found=type(table).__name__)
    prices: dict[str, Price] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise DataFormatError(path, "an object of prices", row=name, found=type(entry).__name__)
        price_in = entry.get("price_per_mtok_in", entry.get("input_price"))
        price_out = entry.get("price_per_mtok_out", entry.get("output_price"))
        for value in (price_in, price_out):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise DataFormatError(
                    path,
                    "input_price/output_price (or price_per_mtok_in/price_per_mtok_out) as non-negative numbers",
                    row=name,
                    found=repr(value),
                )
        prices[name] = Price(float(price_in), float(price_out), f"price file {path.name}")
    return prices
