"""Reading a payload against a contract's dataclass fields: the one type check that message and
TCC branch contracts share (``messages.Contract``, ``branches.BranchContract``)."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing


def read_fields(cls: type, payload: dict) -> tuple[dict, dict[str, str]]:
    """The values ``payload`` gives ``cls``'s fields, and what is wrong, by field name: a
    required field missing, or a value of another type. Keys that are no field are ignored."""
    values, problems = {}, {}
    for name, annotation, required in _fields(cls):
        if name not in payload:
            if required:
                problems[name] = "is missing"
            continue
        value = payload[name]
        if not _is_instance(value, annotation):
            problems[name] = f"must be {_type_name(annotation)}, got {value!r}"
        values[name] = value
    return values, problems


@functools.cache
def _fields(cls: type) -> tuple[tuple[str, object, bool], ...]:
    """(name, resolved annotation, required) per field: resolving the string annotations costs
    more than checking a payload, so it is done once per class, not per payload."""
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            hints[f.name],
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
    )


def _is_instance(value, annotation) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    return "null" if annotation is type(None) else annotation.__name__
