"""One grammar for what users name on the command line and in config files, and one registry per family.

A spec is ``NAME`` or ``NAME:OPTIONS``: ``knn:k=100,temperature=0.5``, ``thompson:discount=0.99``,
``routerbench:../shared/data/routerbench``, ``openai:text-embedding-3-small,base_url=http://localhost:8080/v1``.
OPTIONS are ``key=value`` items separated by commas.  When the thing named has a required first
argument (a dataset's path, an embedding model's name), the first item may be its value alone.  A
comma ends an item only when ``key=`` follows it, so a value may hold commas, slashes and colons.

A :class:`Registry` maps a family's names (routers, learners, embedders, scorers, dataset
formats, providers, decision rules) to the classes or functions that build them, imported on first
use.  It checks a spec against the builder's signature: unknown names list the known ones, unknown
options list the valid ones, and text values are converted to the type each option takes.

>>> Spec.parse("knn:k=100,temperature=0.5")
Spec(name='knn', params={'k': '100', 'temperature': '0.5'}, positional=None)
>>> Spec.parse("routerbench:/data/a,b.csv,output_tokens=300").positional
'/data/a,b.csv'
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crossroads.errors import CrossroadsError

#: A comma that starts a new ``key=value`` item.
_NEXT_ITEM = re.compile(r",\s*(?=[A-Za-z_][A-Za-z0-9_]*\s*=)")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


@dataclass(frozen=True)
class Spec:
    """A name and its options.  Parsed from text, ``params`` hold the text of each value; a
    registry's :meth:`Registry.spec` returns them converted and checked."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    positional: str | None = None  # the first item's text when it is a value alone

    @classmethod
    def parse(cls, text: str, what: str = "spec") -> Spec:
        """The spec written as ``NAME[:OPTIONS]``; ``what`` names it in errors (``router``, ``--drift`` ...)."""
        if not isinstance(text, str) or not text.strip():
            raise CrossroadsError(f"{what} is empty: write NAME or NAME:key=value,... (e.g. knn:k=100)")
        name, _, rest = text.strip().partition(":")
        name = name.strip()
        if not name:
            raise CrossroadsError(f"{what} {text!r} has no name before the colon: write NAME:key=value,...")
        params: dict[str, str] = {}
        positional = None
        items = [item.strip() for item in _NEXT_ITEM.split(rest)] if rest.strip() else []
        for i, item in enumerate(items):
            key, equals, value = item.partition("=")
            if equals and key.strip().isidentifier():
                if key.strip() in params:
                    raise CrossroadsError(f"{what} {text!r} gives {key.strip()} twice")
                params[key.strip()] = value.strip()
            elif i == 0 and item:
                positional = item
            else:
                raise CrossroadsError(f"{what} {text!r}: {item!r} is not key=value (e.g. {name}:key=value)")
        return cls(name, params, positional)

    @property
    def label(self) -> str:
        """The spec written back: ``name`` or ``name:key=value,...``."""
        items = ([self.positional] if self.positional is not None else []) + [f"{k}={v}" for k, v in self.params.items()]
        return f"{self.name}:{','.join(items)}" if items else self.name

    def __str__(self) -> str:
        return self.label


class Registry:
    """The members of one family, by name, each a ``"module:attribute"`` imported on first use.

    >>> shapes = Registry("shape", {"frac": "fractions:Fraction"})
    >>> shapes.build("frac:numerator=3,denominator=4")
    Fraction(3, 4)
    >>> shapes.build("circle")
    Traceback (most recent call last):
    ...
    crossroads.errors.CrossroadsError: unknown shape 'circle'; choose one of: frac
    """

    def __init__(self, family: str, entries: Mapping[str, str], descriptions: Mapping[str, str] | None = None):
        self.family = family
        self._entries = dict(entries)
        self.descriptions = dict(descriptions or {})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def load(self, name: str) -> Any:
        """The class or function registered as ``name``."""
        if name not in self._entries:
            raise CrossroadsError(f"unknown {self.family} {name!r}; choose one of: {self.known()}")
        module, attribute = self._entries[name].split(":")
        return getattr(importlib.import_module(module), attribute)

    def known(self) -> str:
        """The names, with their descriptions when the registry has any."""
        if not self.descriptions:
            return ", ".join(self._entries)
        return "; ".join(f"{name} ({self.descriptions[name]})" if name in self.descriptions else name
                         for name in self._entries)

    def spec(self, spec: str | Spec, **params: Any) -> Spec:
        """``spec`` checked against its builder's signature, with text values converted and ``params`` added."""
        if isinstance(spec, str):
            spec = Spec.parse(spec, self.family)
        return Spec(spec.name, bind(self.load(spec.name), spec, f"{self.family} {spec.name!r}", params))

    def build(self, spec: str | Spec, **params: Any) -> Any:
        """A new member from ``spec`` (``"knn:k=100"`` or a Spec) plus Python ``params``."""
        checked = self.spec(spec, **params)
        return self.load(checked.name)(**checked.params)


def bind(target: Callable[..., Any], spec: Spec, what: str, extra: Mapping[str, Any] | None = None,
         required: bool = True) -> dict[str, Any]:
    """The keyword arguments ``spec`` and ``extra`` give ``target``: names checked, text converted, required ones present.

    A text value of ``spec`` is converted to the parameter's annotated type (or its
    default's type); ``extra`` (values from Python) and values that are not text pass as
    they are.  ``spec.positional`` fills the first parameter when it has no default.
    """
    parameters = _parameters(target)
    free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(target).parameters.values())
    given = {key: _convert(value, parameters.get(key), f"{what}: {key}") if isinstance(value, str) else value
             for key, value in spec.params.items()}
    if spec.positional is not None:
        first = next(iter(parameters.values()), None)
        if first is None or first.default is not inspect.Parameter.empty:
            raise CrossroadsError(f"{what} takes no value without a name ({spec.positional!r}); write key=value. "
                                  f"Its options: {_options(parameters)}")
        if first.name in given:
            raise CrossroadsError(f"{what}: {first.name} is given twice")
        given = {first.name: _convert(spec.positional, first, f"{what}: {first.name}"), **given}
    given.update(extra or {})
    unknown = [key for key in given if key not in parameters]
    if unknown and not free:
        raise CrossroadsError(f"{what} has no option {', '.join(map(repr, unknown))}; its options: {_options(parameters)}")
    missing = [p.name for p in parameters.values() if p.default is inspect.Parameter.empty and p.name not in given]
    if required and missing:
        raise CrossroadsError(f"{what} needs {', '.join(missing)}; its options: {_options(parameters)}")
    return given


def _parameters(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in inspect.signature(target).parameters.values() if p.kind in kinds and p.name != "self"}


def _options(parameters: Mapping[str, inspect.Parameter]) -> str:
    if not parameters:
        return "none"
    return ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name} (default {p.default!r})"
                     for p in parameters.values())


def _types(parameter: inspect.Parameter | None) -> set[str]:
    """The type names a parameter takes: from its annotation's text, else its default's type."""
    if parameter is None:
        return set()
    annotation = parameter.annotation
    if annotation is not inspect.Parameter.empty:
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
        return set(re.findall(r"[A-Za-z_]+", text))
    if parameter.default is None or parameter.default is inspect.Parameter.empty:
        return set()
    return {type(parameter.default).__name__}


def _convert(text: str, parameter: inspect.Parameter | None, what: str) -> Any:
    """``text`` as the type ``parameter`` takes; any type when nothing says which."""
    types = _types(parameter)
    lowered = text.strip().lower()
    if lowered == "none" and (not types or "None" in types or (parameter is not None and parameter.default is None)):
        return None
    if not types - {"None"}:
        types = {"bool", "int", "float", "str"}
    if "bool" in types and lowered in _TRUE + _FALSE:
        return lowered in _TRUE
    for kind in (int, float):
        if kind.__name__ in types:
            try:
                return kind(text)
            except ValueError:
                pass
    if types & {"str", "Path", "PathLike", "Any"}:
        return text
    expected = ("a whole number" if "int" in types and "float" not in types else
                "a number" if types & {"int", "float"} else
                "true or false" if "bool" in types else "/".join(sorted(types)))
    raise CrossroadsError(f"{what}={text!r} is not {expected}")
