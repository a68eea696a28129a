"""Typed configuration: one dataclass per concern, composed per job, loaded from YAML.

Why this shape: a job's config is validated completely on the driver before any cluster resource
is taken, crosses the Ray boundary once as a plain dict (`to_dict`), and is rebuilt on the other
side (`from_dict`). Unknown keys, wrong types and out-of-range values are errors that name the
dotted key and what is allowed.

Override syntax on the command line: ``--set scm.num_blocks=3 --set optim.lr=1e-4``; the value is
parsed as YAML (so ``[16,4,4]``, ``true``, ``null`` work).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range. `key` is the dotted path."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)

    def prefixed(self, prefix: str) -> "ConfigError":
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(key, self.message)


def check(condition: bool, key: str, message: str) -> None:
    """Raise ConfigError(key, message) unless condition holds. Used in __post_init__."""
    if not condition:
        raise ConfigError(key, message)


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Backbone and head. Any timm ViT/DeiT with a CLS token; the patch grid follows from
    img_size / patch_size (nothing assumes 14 x 14)."""

    name: str = "deit_small_patch16_224"
    num_classes: int = 200
    img_size: int = 224
    patch_size: int = 16
    # Width/depth/heads overrides for small models (None keeps the timm architecture's value).
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    drop_path_rate: float = 0.1
    # "" = random init; a local file path (.pth/.safetensors/.bin); or "hub" to let timm
    # download the named model's weights (only when the machine can reach the hub).
    pretrained: str = ""

    def __post_init__(self) -> None:
        check(bool(self.name), "name", "must name a timm ViT/DeiT, e.g. deit_small_patch16_224")
        check(self.num_classes >= 1, "num_classes", f"must be >= 1, got {self.num_classes}")
        check(self.patch_size >= 1, "patch_size", f"must be >= 1, got {self.patch_size}")
        check(
            self.img_size >= self.patch_size and self.img_size % self.patch_size == 0,
            "img_size",
            f"must be a positive multiple of patch_size={self.patch_size}, got {self.img_size}",
        )
        for key in ("embed_dim", "depth", "num_heads"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be null or >= 1, got {value}")
        if self.embed_dim is not None and self.num_heads is not None:
            check(
                self.embed_dim % self.num_heads == 0,
                "num_heads",
                f"must divide embed_dim={self.embed_dim}, got {self.num_heads}",
            )
        check(
            0.0 <= self.drop_path_rate < 1.0,
            "drop_path_rate",
            f"must be in [0, 1), got {self.drop_path_rate}",
        )

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.img_size // self.patch_size
        return side, side


@dataclass
class SCMConfig:
    """Spatial Calibration Module (training-only Activation Diffusion Blocks). num_blocks=0 is
    the TS-CAM baseline."""

    num_blocks: int = 4
    alpha: float = 0.002
    # One Newton-Schulz iteration count per block, or a single count for all blocks.
    iterations: list[int] = field(default_factory=lambda: [16, 4, 4, 4])
    lambda_init: float = 1.0
    beta_init: float = 0.5
    # Train the plain backbone (TS-CAM) for this many epochs before switching the SCM on: from
    # random weights the SCM needs a classification warm-up (DESIGN section 8).
    start_epoch: int = 0
    # "fast" (structured Newton-Schulz) or "dense" (the straightforward reference algorithm).
    implementation: Literal["fast", "dense"] = "fast"

    def __post_init__(self) -> None:
        check(self.num_blocks >= 0, "num_blocks", f"must be >= 0, got {self.num_blocks}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        its = self.iterations
        check(len(its) >= 1, "iterations", "must hold at least one count")
        check(all(i >= 0 for i in its), "iterations", f"counts must be >= 0, got {its}")
        check(
            len(its) in (1, self.num_blocks) or self.num_blocks == 0,
            "iterations",
            f"needs one count per block ({self.num_blocks}) or a single count, got {its}",
        )
        check(self.beta_init > 0, "beta_init", f"must be > 0, got {self.beta_init}")
        check(self.start_epoch >= 0, "start_epoch", f"must be >= 0, got {self.start_epoch}")

    def block_iterations(self) -> list[int]:
        """Per-block iteration counts, the single-count form expanded."""
        if len(self.iterations) == 1:
            return list(self.iterations) * self.num_blocks
        return list(self.iterations[: self.num_blocks])


@dataclass
class DataConfig:
    """A prepared dataset folder (records.parquet + one <split>.beton per split, DESIGN section 4)
    and the loader settings. `root` may be a local path, a shared filesystem path or a URI that
    pyarrow.fs understands (s3://, gs://, file://); URIs are staged to local disk once per node."""

    root: str = "data/synthetic"
    train_split: str = "train"
    # Held-out split with boxes: per-epoch validation, and threshold choice in the wsol protocol.
    val_split: str = "val"
    test_split: str = "test"
    # Training pipeline: resize (short side) -> random crop -> flip, as the reference.
    resize_size: int = 256
    crop_size: int = 224
    # Per-worker batch sizes.
    batch_size: int = 64
    eval_batch_size: int = 64
    num_workers: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check(bool(self.root), "root", "must name a prepared dataset folder or URI")
        for key in ("train_split", "val_split", "test_split"):
            check(bool(getattr(self, key)), key, "must name a split")
        check(self.crop_size >= 1, "crop_size", f"must be >= 1, got {self.crop_size}")
        check(
            self.resize_size >= self.crop_size,
            "resize_size",
            f"must be >= crop_size={self.crop_size}, got {self.resize_size}",
        )
        for key in ("batch_size", "eval_batch_size"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.num_workers >= 1, "num_workers", f"must be >= 1, got {self.num_workers}")


# ----------------------------------------------------------------------------------------------
# Loading, overrides and serialisation
# ----------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        return f"list[{_type_name(inner)}]"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
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
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
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
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
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
        where = prefix or cls.__name__
        raise ConfigError(
            ".".join(filter(None, [prefix, unknown[0]])),
            f"unknown key in {where}; allowed keys: {', '.join(names)}",
        )
    kwargs = {}
    for name in names:
        if name in data:
            key = ".".join(filter(None, [prefix, name]))
            kwargs[name] = _coerce(hints[name], data[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.prefixed(prefix) if prefix else exc


def from_dict(cls: type[T], data: dict | None) -> T:
    """Build and validate a config dataclass from plain data (YAML or a dict that crossed Ray)."""
    return _from_dict(cls, data or {})


def to_dict(config: Any) -> dict:
    """Plain, YAML- and pickle-friendly dict of a config dataclass (the form that crosses Ray)."""
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"scm.num_blocks=3"`` -> (["scm", "num_blocks"], 3). The value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(text, "override must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(key, "override key must be a dotted name like scm.num_blocks")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"cannot parse value {raw!r}: {exc}") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply dotted ``key=value`` overrides to a nested dict (returns a new dict)."""
    import copy

    result = copy.deepcopy(data)
    for text in overrides or []:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(path), f"{part} is not a section")
            node = child
        node[path[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
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


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load a job config: YAML file (optional) + dotted overrides, fully validated."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(exc.key, f"{exc.message} (in {path})") from None
        raise


def dump_yaml(config: Any, path: str | Path | None = None) -> str:
    """Serialise a config to YAML text (and write it when `path` is given)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text
