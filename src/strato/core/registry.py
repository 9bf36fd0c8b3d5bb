"""Named plug-ins: one small registry type for every place a spec names an implementation.

FaaS keep-alive policies, LLM routers and VM policies are all chosen by a name typed by a user. Each
keeps a :class:`Registry` of factories; an unknown name raises a :class:`~strato.errors.ConfigError` that
lists the known ones, so a typo is answered with the choices instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from strato.errors import ConfigError, ConflictError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to plug-ins (usually factories) of one kind, e.g. ``Registry[RouterFactory]("router")``.

    ``kind`` is the word used in error messages ("unknown router 'x' (known: jsq, mixed-pool)").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name registered twice is refused (two plug-ins cannot share it)."""
        if not name or name != name.strip():
            raise ConfigError(f"{self.kind} name {name!r} must be non-empty without surrounding spaces")
        if name in self._items:
            raise ConflictError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def add(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`register`."""

        def decorate(item: T) -> T:
            return self.register(name, item)

        return decorate

    def remove(self, name: str) -> None:
        """Withdraw a plug-in (a test's, or one an extension replaces)."""
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})")
        del self._items[name]

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
