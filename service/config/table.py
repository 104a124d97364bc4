"""Typed reads from one TOML table that record problems instead of raising.

A start-up that stops at the first mistake makes the operator fix a file one
line per restart. Each read here checks one value, appends ``key = value:
expected …`` to a shared list when it is wrong and returns the default, so the
parser goes on and reports everything in one go. ``finish`` then names the keys
nobody read, which is how a typo such as ``gapp`` is caught.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast, overload

from service.config.durations import DURATION_HELP, SIZE_HELP, format_size_bytes, parse_duration_ms, parse_size_bytes
from service.config.schema import NAME


@dataclass(frozen=True)
class Override:
    """An environment variable that set a key: a problem with the value names the variable, not the key."""

    variable: str
    #: The value as the environment (or the file) gave it; may be a secret, so it is kept out of ``repr``.
    text: str = field(repr=False)
    #: The file the value was read from (a ``…_FILE`` variable); its content is never shown.
    file: str | None = None

    def describe(self, value: bool = True) -> str:
        """The variable, with its text when ``value``: a key nobody reads is shown without, as it may be a misspelt secret."""
        if self.file is not None:
            return f"environment variable {self.variable} (file {self.file!r})"
        if not value:
            return f"environment variable {self.variable}"
        return f"environment variable {self.variable} = {self.text!r}"


#: Dotted key (``app.poll_batch``) -> the variable that set it.
Overrides = Mapping[str, Override]


class Table:
    """One table of the document, known by its dotted path (``pipelines.p.window``).

    The methods ``str``, ``int`` and ``bool`` read a value of that type; inside
    the class the builtins are spelled ``builtins.str`` and so on.
    """

    def __init__(
        self, data: Any, path: builtins.str, problems: list[builtins.str], overrides: Overrides | None = None
    ) -> None:
        self.path = path
        self.problems = problems
        #: Keys set by the environment, so that their problems name the variable.
        self.overrides: Overrides = overrides if overrides is not None else {}
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", data, "a table")
            data = {}
        self.data: dict[builtins.str, Any] = data
        #: Keys looked at, present or not; what is left over is unknown (see ``finish``).
        self.read: set[builtins.str] = set()

    def key(self, name: builtins.str) -> builtins.str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: builtins.str, value: Any, allowed: builtins.str) -> None:
        """Report the value of ``name`` (of this table itself when ``name`` is empty) as wrong."""
        where = self.key(name) if name else self.path
        override = self.overrides.get(where)
        if override is not None:
            problem = f"{override.describe()}: expected {allowed}"
            if problem not in self.problems:  # one variable, several bad items (sources = "a b,c d")
                self.problems.append(problem)
        else:
            self.problems.append(f"{where} = {value!r}: expected {allowed}")

    def missing(self, name: builtins.str, allowed: builtins.str) -> None:
        """Report ``name`` (this table itself when ``name`` is empty) as absent where it is required."""
        where = self.key(name) if name else self.path
        self.problems.append(f"{where} is missing: expected {allowed}")

    def get(self, name: builtins.str) -> Any:
        self.read.add(name)
        return self.data.get(name)

    def _get(self, name: builtins.str, required: builtins.bool, allowed: builtins.str) -> Any:
        """``get``, reporting the key as missing when it is absent and ``required``."""
        value = self.get(name)
        if value is None and required:
            self.missing(name, allowed)
        return value

    def has(self, name: builtins.str) -> builtins.bool:
        return name in self.data

    @overload
    def str(
        self, name: builtins.str, default: builtins.str, *, required: builtins.bool = False, empty: builtins.bool = False
    ) -> builtins.str: ...

    @overload
    def str(
        self, name: builtins.str, default: None = None, *, required: builtins.bool = False, empty: builtins.bool = False
    ) -> builtins.str | None: ...

    def str(
        self, name: builtins.str, default: builtins.str | None = None, *, required: builtins.bool = False, empty: builtins.bool = False
    ) -> builtins.str | None:
        value = self._get(name, required, "a non-empty string")
        if value is None:
            return default
        if not isinstance(value, builtins.str) or not (value or empty):
            self.fail(name, value, "a string" if empty else "a non-empty string")
            return default
        return value

    @overload
    def topic(self, name: builtins.str, default: builtins.str, *, required: builtins.bool = False) -> builtins.str: ...

    @overload
    def topic(self, name: builtins.str, default: None = None, *, required: builtins.bool = False) -> builtins.str | None: ...

    def topic(
        self, name: builtins.str, default: builtins.str | None = None, *, required: builtins.bool = False
    ) -> builtins.str | None:
        value = self.str(name, default, required=required)
        # A default is checked where it was written (an invalid [topics] late is reported once).
        if value is not None and self.has(name) and not NAME.match(value):
            self.fail(name, value, "a topic name of letters, digits, '.', '_' and '-'")
        return value

    def choice(self, name: builtins.str, choices: tuple[builtins.str, ...], default: builtins.str) -> builtins.str:
        value = self.get(name)
        if value is None:
            return default
        if value not in choices:
            self.fail(name, value, one_of(choices))
            return default
        return cast(builtins.str, value)  # equal to one of the choices

    @overload
    def int(self, name: builtins.str, default: builtins.int, *, minimum: builtins.int = 0) -> builtins.int: ...

    @overload
    def int(self, name: builtins.str, default: None, *, minimum: builtins.int = 0) -> builtins.int | None: ...

    def int(
        self, name: builtins.str, default: builtins.int | None, *, minimum: builtins.int = 0
    ) -> builtins.int | None:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, builtins.bool) or not isinstance(value, builtins.int) or value < minimum:
            self.fail(name, value, f"a whole number >= {minimum}")
            return default
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, builtins.bool):
            self.fail(name, value, "true or false")
            return default
        return value

    @overload
    def duration(
        self, name: builtins.str, default: builtins.int, *, required: builtins.bool = False, positive: builtins.bool = False
    ) -> builtins.int: ...

    @overload
    def duration(
        self, name: builtins.str, default: None, *, required: builtins.bool = False, positive: builtins.bool = False
    ) -> builtins.int | None: ...

    def duration(
        self, name: builtins.str, default: builtins.int | None, *, required: builtins.bool = False, positive: builtins.bool = False
    ) -> builtins.int | None:
        """A duration such as ``"30m"``, in milliseconds (see ``service.config.durations``)."""
        value = self._get(name, required, DURATION_HELP)
        if value is None:
            return default
        try:
            ms = parse_duration_ms(value)
        except ValueError:
            self.fail(name, value, DURATION_HELP)
            return default
        if positive and ms <= 0:
            self.fail(name, value, "a duration greater than zero")
            return default
        return ms

    def size(self, name: builtins.str, default: builtins.int, *, minimum: builtins.int = 0) -> builtins.int:
        """A size such as ``"64MiB"``, in bytes (see ``service.config.durations``)."""
        value = self._get(name, False, SIZE_HELP)
        if value is None:
            return default
        try:
            size = parse_size_bytes(value)
        except ValueError:
            self.fail(name, value, SIZE_HELP)
            return default
        if size < minimum:
            self.fail(name, value, f"a size of at least {format_size_bytes(minimum)}")
            return default
        return size

    def str_list(self, name: builtins.str, *, required: builtins.bool = False) -> tuple[builtins.str, ...]:
        """A string or a list of strings: ``key = "user_id"`` reads as ``("user_id",)``."""
        value = self._get(name, required, "a string or a list of strings")
        if value is None:
            return ()
        if isinstance(value, builtins.str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, builtins.str) and v for v in value):
            self.fail(name, value, "a non-empty string or a list of non-empty strings")
            return ()
        return tuple(value)

    def table(self, name: builtins.str) -> Table:
        return Table(self.get(name), self.key(name), self.problems, self.overrides)

    def entry(self, name: builtins.str, what: builtins.str) -> Table:
        """The sub-table ``name`` of a table of named entries (pipelines, aggregates, rules).

        A name outside ``NAME`` is reported, since names end up in topic names and
        output fields, but the entry is still read so its other problems show too.
        """
        entry = self.table(name)
        if not NAME.match(name):
            self.problems.append(f"{entry.path}: {what} name {name!r} must use letters, digits, '.', '_' and '-'")
        return entry

    def kind(self, types: Collection[builtins.str]) -> builtins.str | None:
        """The table's ``type``, one of ``types``; None, reported, when it is anything else.

        What else the table may hold depends on its type, so a table of an unknown
        type is not checked further: its other keys would only be noise.
        """
        kind = self.get("type")
        if kind not in types:
            self.fail("type", kind, one_of(types))
            self.finish(allow_extra=True)
            return None
        return cast(builtins.str, kind)

    def entries(
        self, what: builtins.str, types: Collection[builtins.str]
    ) -> Iterator[tuple[builtins.str, builtins.str, Table]]:
        """``(name, type, table)`` for each ``<name> = { type = …, … }`` whose type is one of ``types``.

        The walk aggregates and rules share (see ``entry`` and ``kind``). It is lazy,
        so each entry's problems are reported before the next entry's.
        """
        for name in self.data:
            entry = self.entry(name, what)
            kind = entry.kind(types)
            if kind is not None:
                yield name, kind, entry

    def finish(self, *, allow_extra: builtins.bool = False) -> None:
        """Report the keys never read as unknown, unless the table was only partly read on purpose."""
        if allow_extra:
            return
        for name in self.data:
            if name not in self.read:
                override = self.overrides.get(self.key(name))
                if override is not None:
                    self.problems.append(f"{override.describe(value=False)}: unknown key {self.key(name)}")
                else:
                    self.problems.append(f"{self.key(name)}: unknown key")


def one_of(choices: Iterable[str]) -> str:
    """What a problem says is allowed for a value with a fixed set of choices."""
    return "one of " + ", ".join(repr(c) for c in choices)
