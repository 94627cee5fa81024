"""Command-line options generated from a config dataclass: one place to add a knob.

``peftsum train`` takes one option per :class:`peftsum.config.TrainConfig` field. Its name is the
field's (``max_steps`` -> ``--max-steps``), its type the field's, its help the field's attribute
docstring (:func:`peftsum.config.field_docs`) plus the default. Every option defaults to ``None``
(= not given), so a ``--config`` file or ``--set`` fills what the flags leave out. A bool field
that defaults to false is a plain switch (``--fp16``); one that defaults to true or ``None`` gets
both forms (``--bf16/--no-bf16``). :data:`TRAIN_FLAGS` holds the few options whose names or types
differ from the field's.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Optional

from peftsum.modeling.methods import METHODS


@dataclass(frozen=True)
class FlagSpec:
    """How one field's option differs from the generated default.

    Attributes:
        flags: the option's names (``("--language", "-l")``); empty = ``--field-name``.
        type: the value type on the command line, when it is not the field's (a comma-separated
            string for a list field).
        note: a sentence appended to the help (how to give the value on the command line).
    """

    flags: tuple[str, ...] = ()
    type: Any = None
    note: str = ""


TRAIN_FLAGS: dict[str, FlagSpec] = {
    "method": FlagSpec(note=f"One of: {', '.join(METHODS)}."),
    "languages": FlagSpec(("--language", "-l"), note="Repeat or comma-separate."),
    "learning_rate": FlagSpec(("--learning-rate", "--lr")),
    "target_modules": FlagSpec(type=str, note="Comma-separated module names, or all-linear."),
}
"""``peftsum train``'s options whose names or command-line types are not the field's."""


def option_name(field_name: str) -> str:
    """``max_steps`` -> ``--max-steps``."""
    return "--" + field_name.replace("_", "-")


def _describe_default(value: Any) -> str:
    if value is None or value == "" or value is False:
        return ""
    if value is True:
        return " (default: on)"
    if isinstance(value, (list, tuple)):
        return f" (default: {','.join(map(str, value))})"
    return f" (default: {value:g})" if isinstance(value, float) else f" (default: {value})"


def help_text(doc: str, names: set[str], own: str = "") -> str:
    """A field docstring as command-line help: ````max_steps```` -> ``--max-steps`` for another field's
    name, ````None```` -> ``unset``, other ````code```` without its backquotes; rich markup escaped
    (``[...]`` is shown as typed)."""
    from rich.markup import escape

    def code(match: re.Match) -> str:
        text = match.group(1)
        if text == "None":
            return "unset"
        return option_name(text) if text in names and text != own else text

    return escape(re.sub(r"``(.+?)``", code, doc))


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _value_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; any other hint as it is (``list[str]`` stays a list: a repeatable option)."""
    args = typing.get_args(hint)
    return next(a for a in args if a is not type(None)) if type(None) in args else hint


def _switch(name: str, default: Any) -> tuple[str, ...]:
    """A bool option's names: ``--x`` for a field that defaults to false, else ``--x/--no-x``."""
    flag = option_name(name)
    return (flag,) if default is False else (f"{flag}/--no-{flag[2:]}",)


def config_options(cls, specs: dict[str, FlagSpec] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter per field of ``cls``, each a ``typer.Option`` defaulting to ``None``.

    Args:
        cls: a config dataclass with attribute docstrings.
        specs: per-field exceptions (:class:`FlagSpec`); others get ``--field-name``.

    Returns:
        ``inspect.Parameter`` s, in field order, to put in a command's ``__signature__``; the
        command receives each value under the field's name (``None`` = not given).
    """
    import typer

    from peftsum.config import field_docs

    specs = specs or {}
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    params = []
    for field in dataclasses.fields(cls):
        spec = specs.get(field.name, FlagSpec())
        kind = spec.type or _value_type(hints[field.name])
        default = _field_default(field)
        flags = spec.flags or (_switch(field.name, default) if kind is bool else (option_name(field.name),))
        doc = help_text(docs[field.name], set(docs), field.name) + _describe_default(default)
        option = typer.Option(None, *flags, help=" ".join(part for part in (doc, spec.note) if part))
        params.append(inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind]))
    return params
