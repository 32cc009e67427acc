"""Named registries of classes: the attacks (:mod:`byorn.attacks`) and the defenses (:mod:`byorn.defenses`).

A registry is a plain ``{name: class}`` dict; :func:`registrar` makes its
``@register(name)`` class decorator and :func:`build` makes an instance from
a name and keyword options, naming the unknown name or option in its error.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, Callable, TypeVar

C = TypeVar("C", bound=type)


def registrar(table: dict[str, Any], kind: str) -> Callable[[str], Callable[[C], C]]:
    """``register(name)``: a class decorator adding the class to ``table`` under ``name`` (and naming it)."""
    def register(name: str) -> Callable[[C], C]:
        def deco(cls: C) -> C:
            if name in table:
                raise ValueError(f"{kind} {name!r} is already registered")
            cls.name = name
            table[name] = cls
            return cls
        return deco
    return register


def build(table: dict[str, Any], kind: str, name: str, options: dict[str, Any], what: str = "option") -> Any:
    """The registered class ``name`` built with keyword ``options`` (its dataclass fields)."""
    try:
        cls = table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)}") from None
    allowed = {f.name for f in fields(cls)} if is_dataclass(cls) else set()
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"{kind} {name!r} has no {what}(s) {sorted(unknown)}; it takes {sorted(allowed) or 'none'}")
    return cls(**options)
