"""Named registries of plugin-provided things, with errors that say what *is* registered."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class WspaceError(Exception):
    """Base of every error wspace raises for a user mistake; the CLI prints it without a traceback."""


def plural(kind: str) -> str:
    """"task family" -> "task families", "encoder" -> "encoders"."""
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


class UnknownNameError(WspaceError, KeyError):
    """A name was looked up that no plugin registered."""

    def __init__(self, kind: str, name: str, available: list[str]):
        self.kind, self.name, self.available = kind, name, sorted(available)
        listing = ", ".join(self.available) or "(none)"
        super().__init__(
            f"unknown {kind} {name!r}; registered {plural(kind)}: {listing}. "
            f"Install or enable the plugin that provides it (see `wspace plugins`)."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateNameError(WspaceError):
    """Two plugins registered the same name for the same kind of thing."""

    def __init__(self, kind: str, name: str, first: str, second: str):
        self.kind, self.name, self.plugins = kind, name, (first, second)
        super().__init__(
            f"{kind} {name!r} is registered by both plugin {first!r} and plugin {second!r}; "
            f"uninstall one, or limit installed plugins with WSPACE_LOAD_PLUGINS."
        )


class Registry(Generic[T]):
    """name -> factory, remembering which plugin registered each name."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind, self.base = kind, base  # base: what every registered item must subclass
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, name: str, item: T, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise WspaceError(f"plugin {plugin!r} registered a {self.kind} with an invalid name {name!r}")
        if self.base is not None and not (isinstance(item, type) and issubclass(item, self.base)):
            raise WspaceError(
                f"plugin {plugin!r} registered {self.kind} {name!r} as {item!r}, which is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}; fix the plugin, or start wspace without it "
                f"(WSPACE_LOAD_PLUGINS names the installed plugins to load)")
        if name in self._items:
            raise DuplicateNameError(self.kind, name, self._owners[name], plugin)
        self._items[name] = item
        self._owners[name] = plugin

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._items)) from None

    def owner(self, name: str) -> str:
        self.get(name)
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
