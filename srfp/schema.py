"""Build typed dataclasses from parsed YAML, with errors that name the field, the bad value and what is allowed.

Each settings dataclass declares its fields with type hints; ``choices``, ``at_least``, ``positive`` and ``share`` in a
field's metadata restrict its values (each item of a list, each value of a mapping). ``build(cls, data, where)``
checks unknown keys, missing keys, types, choices and ranges, and raises
:class:`SchemaError` whose message starts with ``where`` (``grids/x.yaml: training.batch_size``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union


class SchemaError(ValueError):
    """A settings file that does not match its schema; the message names file, field, value and allowed values."""


def choices(*allowed, **kwargs) -> Any:
    """A dataclass field whose value must be one of ``allowed``."""
    return dataclasses.field(metadata={"choices": allowed}, **kwargs)


def at_least(minimum, **kwargs) -> Any:
    """A numeric dataclass field whose value must be ``minimum`` or more (null passes where the type allows it)."""
    return dataclasses.field(metadata={"minimum": minimum, "exclusive": False}, **kwargs)


def positive(**kwargs) -> Any:
    """A numeric dataclass field whose value must be above zero."""
    return dataclasses.field(metadata={"minimum": 0, "exclusive": True}, **kwargs)


def share(**kwargs) -> Any:
    """A numeric dataclass field whose value must be above 0 and below 1: a share of something, e.g. a rate."""
    return dataclasses.field(metadata={"minimum": 0, "exclusive": True, "below": 1}, **kwargs)


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"a mapping of {_describe(key)} to {_describe(value)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _fail(where: str, value, expected: str):
    raise SchemaError(f"{where}: {value!r} is not allowed; expected {expected}")


def convert(tp, value, where: str):
    """Check ``value`` against the type ``tp`` (recursively) and return it converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        nested = [option for option in typing.get_args(tp) if dataclasses.is_dataclass(option)]
        if isinstance(value, dict) and len(nested) == 1:  # settings or null, given settings: name their bad field
            return build(nested[0], value, where)
        for option in typing.get_args(tp):
            try:
                return convert(option, value, where)
            except SchemaError:
                continue
        _fail(where, value, _describe(tp))
    if origin is list:
        if not isinstance(value, list):
            _fail(where, value, _describe(tp))
        (item,) = typing.get_args(tp)
        return [convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            _fail(where, value, _describe(tp))
        key_type, value_type = typing.get_args(tp)
        return {convert(key_type, k, f"{where} key {k!r}"): convert(value_type, v, f"{where}.{k}")
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is type(None):
        if value is not None:
            _fail(where, value, "null")
        return None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(where, value, "a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(where, value, "an integer")
        return value
    if not isinstance(value, tp):
        _fail(where, value, _describe(tp))
    return value


def _items(value, path: str) -> list[tuple[str, Any]]:
    """The values a field's restrictions apply to, with their paths: a list's items, a mapping's values."""
    if isinstance(value, list):
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return [(f"{path}.{key}", item) for key, item in value.items()]
    return [(path, value)]


def _check_allowed(metadata, value, where: str) -> None:
    """Raise :class:`SchemaError` unless ``value`` is among the field's ``choices`` and within its range."""
    allowed = metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise SchemaError(f"{where}: {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")
    minimum = metadata.get("minimum")
    if minimum is None or value is None:
        return
    if metadata["exclusive"] and value <= minimum:
        _fail(where, value, f"a number above {minimum}")
    if value < minimum:
        _fail(where, value, f"at least {minimum}")
    if "below" in metadata and value >= metadata["below"]:
        _fail(where, value, f"a number above {minimum} and below {metadata['below']}")


def build(cls, data, where: str):
    """Instantiate dataclass ``cls`` from a mapping, validating every field."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        _fail(where, data, _describe(cls))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        at = f"{where}.{unknown[0]}" if where else unknown[0]
        raise SchemaError(f"{at}: unknown field; allowed fields: {', '.join(fields)}")
    values = {}
    for name, field in fields.items():
        path = f"{where}.{name}" if where else name
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise SchemaError(f"{path}: missing; expected {_describe(hints[name])}")
            continue
        value = convert(hints[name], data[name], path)
        for at, item in _items(value, path):
            _check_allowed(field.metadata, item, at)
        values[name] = value
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:
        if isinstance(error, SchemaError):
            raise
        raise SchemaError(f"{where or 'top level'}: {error}") from None
