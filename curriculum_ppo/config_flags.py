"""Command-line flags generated from the config dataclasses.

A knob of a run is one dataclass field, declared with :func:`knob`: the field gives the default
and the type, its :class:`Flag` metadata the flag's name, help text, choices and whether
``--resume`` may change it, and the dataclass's ``__post_init__`` the validation. This module
turns those fields into argparse flags (the help shows the field's own default, so no default is
typed twice), reads back the flags that were given as a nested config dict, and renders the
same flags as the markdown tables of ``docs/training.md``.

Our own generator instead of ``tyro`` because the flags keep the names users know (``--lr``,
``--frames``, ``--minutes``, not ``--ppo.lr``), a few flags convert units (minutes to seconds)
or invert a boolean (``--no-overlap``), and the base install stays lean.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Iterator, Union

from curriculum_ppo.errors import UserError

FLAG_KEY = "curriculum_ppo.flag"
SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    name: str
    """The flag, e.g. ``--lr``."""
    help: str
    """What the knob does; the generated help appends the field's default."""
    group: str | None = None
    """Help section; fields of a config section default to that section's group."""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    runtime: bool = False
    """``--resume`` may change it (it changes how the run executes, not what it learns)."""
    parse: Callable[[str], Any] | None = None
    """Turns the flag's text into the field's value, when that is not just the field's type."""
    show: Callable[[Any], str] | None = None
    """Renders a default in the flag's own units (e.g. seconds as minutes)."""
    none: str | None = None
    """What a default of ``None`` means (required for such fields)."""


def knob(default: Any, *, flag: str, help: str, **options: Any) -> Any:
    """A dataclass field with default ``default`` and the flag ``flag``; ``options`` are :class:`Flag`'s others."""
    return dataclasses.field(default=default, metadata={FLAG_KEY: Flag(flag, help, **options)})


@dataclass(frozen=True)
class Knob:
    """A config field that has a flag, with where it sits in the nested config."""

    path: tuple[str, ...]
    """``("ppo", "lr")`` for a section's field, ``("total_frames",)`` for a top-level one."""
    field: dataclasses.Field
    type: type
    """The field's scalar type (``int | None`` gives ``int``)."""

    @property
    def flag(self) -> Flag:
        return self.field.metadata[FLAG_KEY]

    @property
    def dest(self) -> str:
        return self.flag.name[2:].replace("-", "_")

    @property
    def default(self) -> Any:
        return self.field.default

    def shown_default(self) -> str:
        """The default as the help and the docs show it."""
        if self.type is bool:
            return "on" if self.default == self.switch_value else "off"
        if self.default is None:
            return self.flag.none
        if self.flag.show is not None:
            return self.flag.show(self.default)
        if self.type is float:
            return f"{self.default:g}"
        if self.type is int:
            return f"{self.default:,}"
        return str(self.default)

    @property
    def switch_value(self) -> bool:
        """A boolean knob's flag takes no value: it sets the opposite of the default."""
        return not self.default

    def help_text(self) -> str:
        return f"{self.flag.help} (default: {self.shown_default()})"


def _scalar_type(annotation: Any, where: str) -> type:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(options) == 1:
            annotation = options[0]
    if annotation not in SCALARS:
        raise TypeError(f"{where}: a knob must be one of {', '.join(t.__name__ for t in SCALARS)} (or None)")
    return annotation


def knobs(config_cls: type, prefix: tuple[str, ...] = ()) -> Iterator[Knob]:
    """Every field with a flag, top-level fields and the fields of dataclass-typed sections, in field order."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            yield from knobs(annotation, prefix + (f.name,))
        elif FLAG_KEY in f.metadata:
            where = f"{config_cls.__name__}.{f.name}"
            knob_ = Knob(prefix + (f.name,), f, _scalar_type(annotation, where))
            if f.default is MISSING:
                raise TypeError(f"{where}: a knob needs a default")
            if f.default is None and knob_.flag.none is None:
                raise TypeError(f"{where}: a knob whose default is None needs Flag.none (what None means)")
            yield knob_


def group_of(knob_: Knob, section_groups: dict[str, str]) -> str:
    group = knob_.flag.group or (section_groups.get(knob_.path[0]) if len(knob_.path) > 1 else None)
    if group is None:
        raise TypeError(f"{'.'.join(knob_.path)}: no help group (give Flag.group or a section group)")
    return group


def add_flags(parser: argparse.ArgumentParser, config_cls: type, groups: tuple[str, ...],
              section_groups: dict[str, str]) -> None:
    """Add one flag per knob of ``config_cls`` to ``parser``, in help sections ``groups`` (in that order).

    Every flag defaults to ``None``, so :func:`given` can tell a flag that was given from one that was not.
    """
    sections = {name: parser.add_argument_group(name) for name in groups}
    for knob_ in knobs(config_cls):
        options: dict[str, Any] = {"dest": knob_.dest, "default": None,
                                   "help": knob_.help_text().replace("%", "%%")}
        if knob_.type is bool:
            options.update(action="store_const", const=knob_.switch_value)
        else:
            options.update(type=knob_.flag.parse or knob_.type, metavar=knob_.flag.metavar,
                           choices=knob_.flag.choices)
        sections[group_of(knob_, section_groups)].add_argument(knob_.flag.name, **options)


def given(args: argparse.Namespace, config_cls: type) -> list[tuple[Knob, Any]]:
    """The knobs whose flags are on the command line, with their values."""
    return [(k, getattr(args, k.dest)) for k in knobs(config_cls) if getattr(args, k.dest, None) is not None]


def apply(base: dict, values: list[tuple[Knob, Any]]) -> dict:
    """``base`` (a nested config dict) with ``values`` set at their knobs' paths; ``base`` is left alone."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for knob_, value in values:
        target = merged
        for key in knob_.path[:-1]:
            target = target.setdefault(key, {})
            if not isinstance(target, dict):
                raise UserError(f"config section '{key}' must be a JSON object, got {target!r}")
        target[knob_.path[-1]] = value
    return merged


class LazyFlagsParser(argparse.ArgumentParser):
    """A (sub)command parser that can add its generated flags on first use.

    The config sections live next to the code they configure, which imports torch; building
    ``train``'s flags only when ``train`` is parsed (or its help shown) spares every other
    command that import. Give it as ``add_subparsers(parser_class=...)``; a subcommand that does
    not call :meth:`add_flags_later` is an ordinary parser.
    """

    def add_flags_later(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._add_flags = add

    def _ensure_flags(self) -> None:
        add = getattr(self, "_add_flags", None)
        if add is not None:
            self._add_flags = None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ensure_flags()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ensure_flags()
        return super().format_usage()

    def format_help(self) -> str:
        self._ensure_flags()
        return super().format_help()


def markdown_tables(config_cls: type, groups: tuple[str, ...], section_groups: dict[str, str]) -> str:
    """The flags as one markdown table per help section: flag, default, meaning (runtime knobs marked)."""
    rows: dict[str, list[str]] = {name: [] for name in groups}
    for knob_ in knobs(config_cls):
        if knob_.type is bool:
            usage = knob_.flag.name
        elif knob_.flag.choices:
            usage = f"{knob_.flag.name} {'|'.join(knob_.flag.choices)}"
        else:
            usage = f"{knob_.flag.name} {knob_.flag.metavar or knob_.dest.upper()}"
        meaning = knob_.flag.help + (" *(may change on `--resume`)*" if knob_.flag.runtime else "")
        cells = (f"`{usage}`", knob_.shown_default(), meaning)
        rows[group_of(knob_, section_groups)].append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    parts = []
    for name in groups:
        parts.append(f"**{name[0].upper()}{name[1:]}**\n\n| flag | default | meaning |\n|---|---|---|\n"
                     + "\n".join(rows[name]))
    return "\n\n".join(parts) + "\n"
