"""Typed configuration: a loading engine (loader.py) and frozen dataclass sections.

    loader.py     YAML (+ `base:`), --set overrides, strict coercion, errors, dotted keys
    sections.py   model, scm, data, eval: shared by the jobs
    train.py      TrainJobConfig (`scm-ray train`): + optim, train, ray
    evaluate.py   EvaluateJobConfig (`scm-ray evaluate`): eval, data, ray (actor pool), report

The search job's config, TuneJobConfig, lives beside the search-space rules it validates with,
in scm_ray/tune/config.py. Override syntax: ``--set scm.num_blocks=3 --set optim.lr=1e-4``; the
value is parsed as YAML (so ``[16,4,4]``, ``true``, ``null`` work).
"""

from scm_ray.config.evaluate import EvalDataConfig, EvalPoolConfig, EvalReportConfig, EvaluateJobConfig
from scm_ray.config.loader import (
    ConfigError,
    apply_overrides,
    check,
    dump_yaml,
    flatten,
    from_dict,
    join_key,
    load_config,
    load_yaml,
    parse_override,
    set_dotted,
    setting,
    split_key,
    to_dict,
)
from scm_ray.config.sections import DataConfig, EvalConfig, ModelConfig, SCMConfig, resolve_precision
from scm_ray.config.train import OptimConfig, RayConfig, TrainConfig, TrainJobConfig

__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "EvalDataConfig", "EvalPoolConfig", "EvalReportConfig",
    "EvaluateJobConfig", "ModelConfig", "OptimConfig", "RayConfig", "SCMConfig", "TrainConfig",
    "TrainJobConfig", "apply_overrides", "check", "dump_yaml", "flatten", "from_dict", "join_key",
    "load_config", "load_yaml", "parse_override", "resolve_precision", "set_dotted", "setting", "split_key", "to_dict",
]
