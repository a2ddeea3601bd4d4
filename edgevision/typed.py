"""Dataclasses to and from JSON-like data, checked against their type hints, and their JSON Schema.

The run report (pipeline/report.py) and the recipe (pipeline/recipe.py) are dataclasses; this module is the one
place that turns them into plain data and back. Reading checks every value against the field's annotation
(str, int, float, bool, None, Enum, Literal, list[T], dict[str, T], nested dataclasses, unions of these), so a
wrong key or value is a one-line error naming the key, the value and what is allowed, never a KeyError later.
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from functools import lru_cache
from typing import Any, Literal, TypeVar, Union

from edgevision.errors import EdgevisionError

T = TypeVar("T")
JSON = Any  # plain data: what json.loads returns
# A value JSON (or plain YAML) can hold, and a mapping of them: data whose keys are open by nature (a model's
# constructor arguments, a fingerprint's inputs, a file before it is checked into its type), never an object.
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]
JSONObject = dict[str, JSONValue]
PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}


class ContractError(EdgevisionError):
    """Data that does not fit its type: an unknown key, a missing one, a value of the wrong type."""


@lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def omitted(**kwargs: Any) -> Any:
    """A field that is None unless set, and then left out of the data (a record's key that only some runs have)."""
    return dataclasses.field(default=None, metadata={"omit_none": True}, **kwargs)


def transient(**kwargs: Any) -> Any:
    """A field that is not data (arrays a computation keeps with its result): to_data leaves it out."""
    return dataclasses.field(metadata={"data": False}, **kwargs)


def flattened(**kwargs: Any) -> Any:
    """A field holding a dataclass (or None) whose keys are written into its parent's, not under its own name."""
    return dataclasses.field(default=None, metadata={"flatten": True}, **kwargs)


def to_data(obj: Any) -> JSON:
    """A dataclass (or list/dict of them, enums) as plain data: enums by value, fields in declaration order
    (derived fields too; an `omitted` field only when set, a `flattened` one's keys in place of its own, a
    `transient` one never)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("data") is False or (value is None and f.metadata.get("omit_none")):
                continue
            if f.metadata.get("flatten"):
                out.update(to_data(value) or {})
            else:
                out[f.name] = to_data(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    return obj


def from_data(cls: type[T], data: JSON, where: str = "", *, strict: bool = True, source: str = "data") -> T:
    """`data` (a mapping) as a `cls` dataclass. strict: an unknown key is an error (else it is ignored).
    Missing keys take the field's default; a missing key without one is an error."""
    if not isinstance(data, dict):
        raise ContractError(f"{source}: {where or 'the top level'} must be a mapping, got {_shown(data)}")
    hints = field_types(cls)
    unknown = [k for k in data if k not in hints]
    if strict and unknown:
        raise ContractError(f"{source}: unknown key '{where}{unknown[0]}'", f"allowed here: {', '.join(sorted(hints))}")
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            values[f.name] = convert(hints[f.name], data[f.name], f"{where}{f.name}", strict=strict, source=source)
            _check_allowed(f, values[f.name], f"{where}{f.name}", source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ContractError(f"{source}: missing key '{where}{f.name}'")
    return cls(**values)


def allowed(values: tuple, default: Any, **kwargs: Any) -> Any:
    """A dataclass field whose value must be one of `values`, a set known only at run time (a registry's names);
    for a fixed set, annotate with Literal or an Enum instead."""
    return dataclasses.field(default=default, metadata={"allowed": tuple(values)}, **kwargs)


def _check_allowed(f: dataclasses.Field, value: Any, where: str, source: str) -> None:
    choices = f.metadata.get("allowed")
    if choices is not None and value not in choices:
        raise ContractError(f"{source}: '{where}' must be one of {', '.join(map(str, choices))}, got {value!r}")


def convert(hint: Any, value: Any, where: str, *, strict: bool = True, source: str = "data") -> Any:
    """`value` checked against (and built as) `hint`."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return _convert_union(args, value, where, strict, source)
    if origin is Literal:
        if value not in args:
            raise ContractError(f"{source}: '{where}' must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ContractError(f"{source}: '{where}' must be a list, got {_shown(value)}")
        try:
            return [convert(args[0], v, f"{where}[{i}]", strict=strict, source=source) for i, v in enumerate(value)]
        except ContractError:
            if args[0] not in PLURALS:
                raise
            raise ContractError(f"{source}: '{where}' must be a list of {PLURALS[args[0]]}, got {value!r}") from None
    if origin is dict:
        if not isinstance(value, dict):
            raise ContractError(f"{source}: '{where}' must be a mapping, got {_shown(value)}")
        return {k: convert(args[1], v, f"{where}.{k}", strict=strict, source=source) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = [m.value for m in hint]
        if value not in allowed:
            raise ContractError(f"{source}: '{where}' must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return hint(value)
    if dataclasses.is_dataclass(hint):
        return from_data(hint, value, f"{where}.", strict=strict, source=source)
    return _convert_scalar(hint, value, where, source)


def _convert_union(args: tuple, value: Any, where: str, strict: bool, source: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise ContractError(f"{source}: '{where}' must be {_type_names(args)}, got None")
    errors, alternatives = [], [a for a in args if a is not type(None)]
    for arg in alternatives:
        try:
            return convert(arg, value, where, strict=strict, source=source)
        except ContractError as e:
            errors.append(e)
    if len(alternatives) == 1 and (typing.get_origin(alternatives[0]) is not None
                                   or dataclasses.is_dataclass(alternatives[0])):
        raise errors[0]  # one structured alternative (list, mapping, dataclass): its own error says where
    raise ContractError(f"{source}: '{where}' must be {_type_names(args)}, got {value!r}")


def _convert_scalar(hint: type, value: Any, where: str, source: str) -> Any:
    ok = isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool)  # YAML `yes` is no number
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True  # an int is a float value; kept as given so that a dumped recipe reads as written
    if not ok:
        raise ContractError(f"{source}: '{where}' must be {_type_names((hint,))}, got {value!r}")
    return value


def _type_names(args) -> str:
    names = []
    for a in args:
        if a is type(None):
            names.append("null")
        elif typing.get_origin(a) in (list, tuple):
            names.append("a list")
        elif typing.get_origin(a) is dict:
            names.append("a mapping")
        else:
            names.append(getattr(a, "__name__", str(a)))
    return " or ".join(names)


def _shown(value: Any) -> str:
    return type(value).__name__ if isinstance(value, (dict, list)) else repr(value)


# --- JSON Schema ---------------------------------------------------------------------------------------------
def json_schema(cls: type, title: str, extra_properties: bool = False) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a dataclass: one definition per nested dataclass under $defs."""
    defs: dict[str, Any] = {}
    root = _object_schema(cls, defs, extra_properties)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **root, "$defs": defs}


def _object_schema(cls: type, defs: dict[str, Any], extra_properties: bool = True) -> dict[str, Any]:
    hints = field_types(cls)
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return {"type": "object", **({"description": doc} if doc and not doc.startswith(cls.__name__ + "(") else {}),
            "properties": {name: _schema_of(hint, defs) for name, hint in hints.items()},
            "required": required, "additionalProperties": extra_properties}


def _schema_of(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if hint is Any:
        return {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(a, defs) for a in args]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        return {"type": "array", "items": _schema_of(args[0], defs)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1], defs)}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    if dataclasses.is_dataclass(hint):
        if hint.__name__ not in defs:
            defs[hint.__name__] = {}  # placed first: a type that holds itself refers to it
            defs[hint.__name__] = _object_schema(hint, defs)
        return {"$ref": f"#/$defs/{hint.__name__}"}
    scalar = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    return {"type": scalar[hint]}
