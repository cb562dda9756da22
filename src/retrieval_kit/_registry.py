"""A name -> factory registry shared by losses and miners: own snake_case names first, then any
class of a pytorch-metric-learning module by its class name."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def _same_definition(a: Any, b: Any) -> bool:
    # The same code run again (a notebook cell, a re-imported script) defines a new object
    # with the same name in the same module: re-registering it is not a clash.
    return a is b or (
        getattr(a, "__module__", None) == getattr(b, "__module__", object())
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", object())
    )


class UnknownComponentError(KeyError, ValueError):
    """An unknown component name (a ``KeyError`` and a ``ValueError``), with close names."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class ComponentRegistry:
    """Names of one kind of component (``"loss"``, ``"miner"``) and how to build them.

    Args:
        kind: what the components are, for messages.
        lister: the public function listing them, for messages.
        fallback: a module whose public classes deriving from ``base`` are available by class
            name (``pytorch_metric_learning.losses``).
        base: their common base class.
    """

    def __init__(self, kind: str, lister: str, fallback: ModuleType, base: type) -> None:
        self.kind = kind
        self.lister = lister
        self.fallback = fallback
        self.base = base
        self._own: dict[str, Callable[..., Any]] = {}

    def register(
        self, name: str | Callable[..., Any] | None = None, *, replace: bool = False
    ) -> Any:
        """Decorator registering a class or factory under ``name`` (default: its own name)."""

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = name if isinstance(name, str) else fn.__name__
            if not key or not isinstance(key, str):
                raise ValueError(f"invalid {self.kind} name {key!r}")
            if key in self._fallback_names():
                raise ValueError(
                    f"{self.kind} name {key!r} is pytorch-metric-learning's; choose another"
                )
            if key in self._own and not replace and not _same_definition(self._own[key], fn):
                raise ValueError(
                    f"{self.kind} {key!r} is already registered (by {self._own[key]!r}); "
                    f"pass replace=True to override it"
                )
            self._own[key] = fn
            return fn

        if callable(name):  # used bare: @register_loss
            return decorator(name)
        return decorator

    def _fallback_names(self) -> list[str]:
        names = []
        for key, value in vars(self.fallback).items():
            if (
                inspect.isclass(value)
                and issubclass(value, self.base)
                and not key.startswith(("_", "Base"))
                and not inspect.isabstract(value)
            ):
                names.append(key)
        return sorted(names)

    def names(self, filter: str = "", pml: bool = True) -> list[str]:
        """Own names (sorted), then pytorch-metric-learning's class names (sorted)."""
        names = sorted(self._own) + (self._fallback_names() if pml else [])
        return [n for n in names if not filter or fnmatch.fnmatch(n, filter)]

    def get(self, name: str) -> Callable[..., Any]:
        """The class or factory behind ``name``; ``KeyError`` with close names when unknown."""
        if not isinstance(name, str):
            raise TypeError(f"a {self.kind} name must be a string, got {name!r}")
        if name in self._own:
            return self._own[name]
        if name in self._fallback_names():
            return getattr(self.fallback, name)
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        close += [n for n in known if n.lower() == name.lower() and n not in close]
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownComponentError(
            f"unknown {self.kind} {name!r}{hint} ({self.lister}() lists them: retrieval_kit's "
            f"snake_case names and pytorch-metric-learning class names)"
        )

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs``; a bad keyword is a ``TypeError`` naming both."""
        factory = self.get(name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
            signature = None
        if signature is not None and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
        ):
            bad = [k for k in kwargs if k not in signature.parameters]
            if bad:
                raise TypeError(
                    f"{self.kind} {name!r} got unknown keyword argument(s) {bad}; it takes "
                    f"{[p for p in signature.parameters if p != 'self']}"
                )
        try:
            return factory(**kwargs)
        except TypeError as e:
            found = _UNEXPECTED.search(str(e))
            which = f" {found.group(1)!r}" if found else ""
            raise TypeError(
                f"{self.kind} {name!r} rejected keyword argument{which} "
                f"(given: {sorted(kwargs)}): {e}"
            ) from e
