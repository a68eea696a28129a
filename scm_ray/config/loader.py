"""The loading engine: YAML files (with `base:` inheritance), `--set` overrides, strict typed
coercion into frozen dataclasses, and error wording. It knows no section: the sections are plain
frozen dataclasses (scm_ray/config/sections.py and the job configs) that validate themselves in
`__post_init__` with `check`.

Why this shape: a job's config is validated completely on the driver before any cluster resource
is taken, crosses the Ray boundary once as a plain dict (`to_dict`), and is rebuilt on the other
side (`from_dict`). Unknown keys, wrong types, non-finite numbers and out-of-range values are
errors that name the dotted key, what is allowed and where the value came from (the YAML file,
or the `--set` override that wrote it).

A validated config is never changed: derive another with `dataclasses.replace`, which validates
the new one the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")

# A YAML may start from another one: `base: train_synthetic.yaml` (relative to the including file).
BASE_KEY = "base"


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range. `key` is the dotted path;
    `source` says where the value came from when that is not the YAML file (``--set k=v``)."""

    def __init__(self, key: str, message: str, source: str = ""):
        self.key = key
        self.message = message
        self.source = source
        text = f"{key}: {message}" if key else message
        # "optim.lr: expected a number, got 'abc' (from --set optim.lr=abc)": what the user typed
        super().__init__(f"{text} (from {source})" if source else text)

    def __reduce__(self):
        """Pickle as (key, message, source): a ConfigError raised in a Ray actor or worker then
        reaches the driver as itself (the default would call __init__ with one argument)."""
        return type(self), (self.key, self.message, self.source)

    def prefixed(self, prefix: str) -> "ConfigError":
        return ConfigError(join_key(prefix, self.key) if self.key else prefix, self.message, self.source)


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless condition holds. Used in __post_init__."""
    if not condition:
        raise ConfigError(key, message)


def setting(default: Any = MISSING, *, help: str, factory: Any = MISSING) -> Any:
    """A config field with its one-line help (the one place it is written: `scm-ray config
    show` prints it beside the value). `factory` builds mutable defaults (lists)."""
    if factory is not MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def field_help(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


# ----------------------------------------------------------------------------------------------
# Dotted keys: "optim.lr" <-> ["optim", "lr"] <-> {"optim": {"lr": ...}}
# ----------------------------------------------------------------------------------------------


def join_key(*parts: str) -> str:
    """"optim" + "lr" -> "optim.lr" (empty parts dropped)."""
    return ".".join(p for p in parts if p)


def split_key(key: str) -> list[str]:
    """"optim.lr" -> ["optim", "lr"]; an empty part is a ConfigError."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(key, "must be a dotted name like scm.num_blocks")
    return parts


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data["a"]["b"] = value for key "a.b", creating sections on the way; a non-section on the
    way is a ConfigError."""
    parts = split_key(key)
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"{part} is not a section")
        node = child
    node[parts[-1]] = value


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}; lists stay whole (one field)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = join_key(prefix, key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------------------------
# Coercion: plain data -> typed, validated dataclasses
# ----------------------------------------------------------------------------------------------


def type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{type_name(inner)}]"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce_float(value: Any, key: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"expected a number, got {value!r}")
    if not math.isfinite(value):  # inf/NaN poison the first step or every comparison
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    return float(value)


def coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it in canonical form (int -> float
    where a float is expected, tuples -> lists). Raise ConfigError naming `key` otherwise."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            try:
                return coerce(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, f"expected {type_name(tp)}, got {value!r}")
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected {type_name(tp)}, got {value!r}")
        return [coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is type(None):
        if value is not None:
            raise ConfigError(key, f"expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        return _coerce_float(value, key)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")


def _from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(join_key(prefix, unknown[0]),
                          f"unknown key in {prefix or cls.__name__}; allowed keys: {', '.join(names)}")
    kwargs = {name: coerce(hints[name], data[name], join_key(prefix, name))
              for name in names if name in data}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.prefixed(prefix) if prefix else exc


def field_type(cls: type, key: str) -> Any:
    """The annotation of the dotted field `key` of config class `cls`; a ConfigError saying why
    when there is no such field (a search space names fields by their dotted keys)."""
    tp: Any = cls
    parts = split_key(key)
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(key, f"{parts[i - 1]} is not a section")
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        if part not in names:
            where = join_key(*parts[:i]) or tp.__name__
            raise ConfigError(key, f"unknown key in {where}; allowed keys: {', '.join(names)}")
        tp = typing.get_type_hints(tp)[part]
    return tp


def is_integer_field(tp: Any) -> bool:
    """int, or int | None: a field that refuses the floats uniform/loguniform sample."""
    options = get_args(tp) if get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return int in options and float not in options


def from_dict(cls: type[T], data: dict | None) -> T:
    """Build and validate a config dataclass from plain data (YAML or a dict that crossed Ray)."""
    return _from_dict(cls, data or {})


def to_dict(config: Any) -> dict:
    """Plain, YAML- and pickle-friendly dict of a config dataclass (the form that crosses Ray)."""
    return dataclasses.asdict(config)


# ----------------------------------------------------------------------------------------------
# Files and overrides
# ----------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """``"scm.num_blocks=3"`` -> ("scm.num_blocks", 3). The value is parsed as YAML (so
    ``[16,4,4]``, ``true``, ``null`` work)."""
    if "=" not in text:
        raise ConfigError(text, "override must look like section.key=value")
    key, raw = (part.strip() for part in text.split("=", 1))
    split_key(key)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse value {raw!r}: {exc}") from None
    return key, value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply dotted ``key=value`` overrides to a nested dict (returns a new dict)."""
    result = copy.deepcopy(data)
    for text in overrides or []:
        set_dotted(result, *parse_override(text))
    return result


def merge(base: dict, top: dict) -> dict:
    """`top` over `base`: mappings merge key by key, anything else in `top` replaces."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError("", f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, with errors that name the file. A `base: other.yaml` key (a path
    relative to this file) starts from that file's mapping, itself possibly based on another;
    this file's keys then override it section by section. A cycle is refused."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(BASE_KEY, f"{path}: base files form a cycle: {loop}")
    data = _read_mapping(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(BASE_KEY, f"{path}: must be the path of another YAML file, got {base!r}")
    return merge(load_yaml(resolved.parent / base, (*_chain, resolved)), data)


def _override_of(key: str, overrides: list[str]) -> str | None:
    """The last `--set` text that wrote `key` (or a section/field above or below it)."""
    for text in reversed(overrides):
        name = text.split("=", 1)[0].strip()
        if key == name or key.startswith(name + ".") or key.startswith(name + "[") \
                or name.startswith(key + "."):
            return text
    return None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load a job config: YAML file (optional) + dotted overrides, fully validated. An error
    names where the offending value came from: the `--set` override, else the file."""
    overrides = list(overrides or [])
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        text = _override_of(exc.key, overrides) if exc.key else None
        if text is not None:
            raise ConfigError(exc.key, exc.message, source=f"--set {text}") from None
        if path is not None:
            raise ConfigError(exc.key, f"{exc.message} (in {path})") from None
        raise


def dump_yaml(config: Any, path: str | Path | None = None) -> str:
    """Serialise a config to YAML text (and write it when `path` is given)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
