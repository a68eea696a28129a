"""The search space as the YAML states it, and the training config each trial gets from it.

Ray-free on purpose: tune/config.py validates a tune YAML with these functions at load time (before
any cluster resource is taken, and in processes that never import Ray); only `tune.search`
turns the checked specs into Ray Tune domains.

A space entry maps a dotted training-config field to one distribution:

    optim.lr:        {loguniform: [1.0e-5, 1.0e-3]}
    scm.alpha:       {uniform: [0.001, 0.003]}
    scm.num_blocks:  {randint: [0, 4]}          # both ends included
    data.batch_size: {choice: [32, 64]}
    optim.schedule:  {grid_search: [cosine, constant]}

Two pseudo-fields search the Newton-Schulz counts the way the method uses them:
`scm.iterations_first` (the first ADB) and `scm.iterations_rest` (every later ADB). Whenever
one of them or `scm.num_blocks` is searched, `scm.iterations` is rebuilt as
[first] + [rest] * (num_blocks - 1), unsearched parts taken from the base config, so a trial
with any block count gets a valid list. That rebuild would overwrite a searched
`scm.iterations`, so `scm.iterations` cannot be searched together with any of them.

Integer fields (train.epochs, scm.num_blocks, ...) take randint, choice or grid_search only:
uniform and loguniform sample floats. When the lists of a space (and the ends of its ranges)
make few enough combinations, every combination is checked as a whole training config, so
cross-field conflicts (scm.start_epoch against train.epochs, optim.min_lr against optim.lr)
fail at load time too.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from typing import Any

from scm_ray.config import ConfigError, TrainJobConfig, from_dict, set_dotted
from scm_ray.config.loader import field_type, is_integer_field

KINDS = ("loguniform", "uniform", "randint", "choice", "grid_search")
RANGE_KINDS = ("loguniform", "uniform", "randint")
ITERATIONS_FIRST = "scm.iterations_first"
ITERATIONS_REST = "scm.iterations_rest"
PSEUDO_FIELDS = (ITERATIONS_FIRST, ITERATIONS_REST)
# The worker group, storage and run name belong to the search, not to a trial.
FIXED_SECTIONS = ("ray.",)
# Above this many combinations of probe values the space is checked entry by entry only.
MAX_CHECKED_COMBINATIONS = 256


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number_or_value(value: Any) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) as the string "1e-4"; a space means the number."""
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def flatten_space(space: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": {loguniform: ...}}} -> {"optim.lr": {loguniform: ...}}: a --set
    override like `search.space.optim.lr={...}` arrives nested, the YAML form is dotted.
    Numbers written like 1e-4 come back as numbers."""
    flat = {}
    for name, spec in space.items():
        full = f"{prefix}{name}"
        is_section = isinstance(spec, dict) and spec and all(isinstance(v, dict) for v in spec.values())
        if is_section and not (len(spec) == 1 and next(iter(spec)) in KINDS):
            flat.update(flatten_space(spec, f"{full}."))
        elif isinstance(spec, dict):
            flat[full] = {kind: [_number_or_value(v) for v in args] if isinstance(args, list) else args
                          for kind, args in spec.items()}
        else:
            flat[full] = spec
    return flat


def spec_kind(name: str, spec: Any) -> tuple[str, list]:
    """(kind, arguments) of a space entry, or ConfigError naming `search.space.<name>`."""
    key = f"search.space.{name}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(key, f"must be a mapping with one of {', '.join(KINDS)}, "
                               f"e.g. {{loguniform: [1.0e-5, 1.0e-3]}}; got {spec!r}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise ConfigError(key, f"unknown distribution {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(key, f"{kind} needs a non-empty list, got {args!r}")
    if kind in RANGE_KINDS:
        _check_range(key, kind, args)
    return kind, args


def _check_range(key: str, kind: str, args: list) -> None:
    number = (int,) if kind == "randint" else (int, float)
    if len(args) != 2 or any(isinstance(a, bool) or not isinstance(a, number) for a in args):
        what = "integers" if kind == "randint" else "numbers"
        raise ConfigError(key, f"{kind} needs two {what} [low, high], got {args!r}")
    low, high = args
    if kind == "randint" and low > high:
        raise ConfigError(key, f"randint needs low <= high, got {args!r}")
    if kind != "randint" and not low < high:
        raise ConfigError(key, f"{kind} needs low < high, got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(key, f"loguniform needs low > 0, got {args!r}")


def _base_counts(scm: dict) -> tuple[int, int]:
    """(first, rest) Newton-Schulz counts of the base config's scm section."""
    its = list(scm.get("iterations") or [16, 4])
    return its[0], its[1] if len(its) > 1 else its[0]


def trial_dict(base: dict, sample: dict) -> dict:
    """The training-config dict of one trial: `base` (a TrainJobConfig dict) with the sampled
    values set by dotted name and the iteration pseudo-fields folded into scm.iterations."""
    data = copy.deepcopy(base)
    values = dict(sample)
    first = values.pop(ITERATIONS_FIRST, None)
    rest = values.pop(ITERATIONS_REST, None)
    for name, value in values.items():
        set_dotted(data, name, value)
    if first is not None or rest is not None or "scm.num_blocks" in values:
        scm = data.setdefault("scm", {})
        base_first, base_rest = _base_counts(base.get("scm", {}))
        first = base_first if first is None else first
        rest = base_rest if rest is None else rest
        blocks = int(scm.get("num_blocks", 4))
        scm["iterations"] = [first] + [rest] * max(blocks - 1, 0)
    return data


def trial_config(base: dict, sample: dict) -> TrainJobConfig:
    """trial_dict, validated as a TrainJobConfig; a trial whose SCM would never switch on
    (scm.start_epoch >= train.epochs) is refused: it would search nothing about the SCM."""
    cfg = from_dict(TrainJobConfig, trial_dict(base, sample))
    if cfg.scm_never_active():
        raise ConfigError("scm.start_epoch", f"must be < train.epochs={cfg.train.epochs} in a trial "
                                             "(else the SCM never trains)")
    return cfg


def check_space(space: dict, base: dict, searcher: str) -> None:
    """Every entry well formed, naming a real training field, and each of its probe values
    accepted by the training config's own validation; the searcher able to express it."""
    if not space:
        raise ConfigError("search.space", "is empty; name at least one field to search, "
                                          "e.g. optim.lr: {loguniform: [1.0e-5, 1.0e-3]}")
    if "scm.iterations" in space and any(p in space for p in PSEUDO_FIELDS):
        raise ConfigError("search.space.scm.iterations",
                          f"search either scm.iterations or {' / '.join(PSEUDO_FIELDS)}, not both")
    if "scm.iterations" in space and "scm.num_blocks" in space:
        # trial_dict rebuilds scm.iterations for every sampled block count.
        raise ConfigError("search.space.scm.iterations",
                          "a searched scm.num_blocks rebuilds scm.iterations for each block count; "
                          f"search {' / '.join(PSEUDO_FIELDS)} instead of scm.iterations")
    probes = {}
    for name, spec in space.items():
        if not isinstance(name, str) or not name:
            raise ConfigError("search.space", f"field names must be dotted strings, got {name!r}")
        kind, args = spec_kind(name, spec)
        probes[name] = _check_field(name, kind, args, base)
        _check_searcher(name, kind, args, searcher)
    _check_combinations(probes, base)


def _check_field(name: str, kind: str, args: list, base: dict) -> list:
    """Refuse an entry the training config cannot take; return its probe values."""
    key = f"search.space.{name}"
    if name.startswith(FIXED_SECTIONS):
        raise ConfigError(key, "the ray section is fixed for the whole search (worker group, "
                               "storage, names); set it outside search.space")
    if name in PSEUDO_FIELDS and kind not in ("randint", "choice", "grid_search"):
        raise ConfigError(key, f"iteration counts are integers: use randint, choice or grid_search, not {kind}")
    if name not in PSEUDO_FIELDS:
        try:
            tp = field_type(TrainJobConfig, name)
        except ConfigError as exc:
            raise ConfigError(key, f"not a training config field ({exc})") from None
        if kind in ("uniform", "loguniform") and is_integer_field(tp):
            raise ConfigError(key, f"is an integer field: use randint, choice or grid_search, "
                                   f"not {kind} (it samples floats)")
    values = _probe_values(kind, args)
    for value in values:
        try:
            trial_config(base, {name: value})
        except ConfigError as exc:
            raise ConfigError(key, f"value {value!r} is not valid for the training config: {exc}") from None
    return values


def _probe_values(kind: str, args: list) -> list:
    """The values that stand for an entry: a list's options; a range's two ends (every value
    between has their type and lies inside), as floats for uniform and loguniform because
    those are what Tune samples (so an integer field refuses them here, not in a trial)."""
    if kind in ("uniform", "loguniform"):
        return [float(a) for a in args]
    return list(args)


def _check_combinations(probes: dict[str, list], base: dict) -> None:
    """Each combination of the entries' probe values as one trial's training config, when
    there are few enough: a conflict between two searched fields (or a searched and a base
    field, e.g. scm.start_epoch >= a searched train.epochs) then fails at load time instead of
    in a trial. The error names the searched field the training config blames, if any."""
    if math.prod(len(values) for values in probes.values()) > MAX_CHECKED_COMBINATIONS:
        return
    names = list(probes)
    for combination in itertools.product(*probes.values()):
        sample = dict(zip(names, combination))
        try:
            trial_config(base, sample)
        except ConfigError as exc:
            key = f"search.space.{exc.key}" if exc.key in sample else "search.space"
            raise ConfigError(key, f"the trial {sample} is not a valid training config: {exc}") from None


def max_epochs(space: dict, base_epochs: int) -> int:
    """The most epochs any trial can train: `base_epochs` unless train.epochs is searched, then
    the largest value its entry gives (randint includes its upper end). ASHA's max_t defaults
    to it, so the longest trials are not cut at the base config's count."""
    spec = space.get("train.epochs")
    if spec is None:
        return base_epochs
    _, args = spec_kind("train.epochs", spec)
    return max(args)  # a list's largest option, or a range's upper end


def _check_searcher(name: str, kind: str, args: list, searcher: str) -> None:
    key = f"search.space.{name}"
    if searcher == "grid" and kind not in ("choice", "grid_search"):
        raise ConfigError(key, f"search.searcher=grid enumerates lists only: use choice or "
                               f"grid_search here (or searcher random/optuna), not {kind}")
    if searcher == "optuna":
        if kind == "grid_search":
            raise ConfigError(key, "search.searcher=optuna samples; grid_search needs searcher random or grid")
        if kind == "choice" and not all(v is None or isinstance(v, (bool, int, float, str)) for v in args):
            raise ConfigError(key, f"search.searcher=optuna needs scalar choices, got {args!r}")


def is_log_scale(spec: dict) -> bool:
    """Whether a parameter reads best on a log axis (the plot)."""
    return next(iter(spec)) == "loguniform"


def grid_size(space: dict) -> int:
    """Number of points of the grid part of a space (1 when nothing is gridded)."""
    return math.prod(len(args) for spec in space.values()
                     for kind, args in spec.items() if kind == "grid_search")
