"""The search section of a tune YAML: checked at load time, before Ray is imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from scm_ray.config import ConfigError, load_config
from scm_ray.tune.config import TuneJobConfig
from scm_ray.tune.space import trial_config

SHIPPED = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "tune_synthetic.yaml"


def _load(*overrides: str) -> TuneJobConfig:
    return load_config(TuneJobConfig, SHIPPED, list(overrides))


def test_shipped_config_searches_the_issue_fields():
    cfg = _load()
    assert {"optim.lr", "scm.num_blocks", "scm.alpha", "scm.iterations_first",
            "scm.iterations_rest"} <= set(cfg.search.space)
    assert 0 in cfg.search.space["scm.num_blocks"]["choice"]  # the no-SCM baseline
    assert cfg.search.metric == "val/gt_known" and cfg.search.mode == "max"


@pytest.mark.parametrize(
    "override,key,fragment",
    [
        ("search.space.scm.nope={choice: [1]}", "search.space.scm.nope", "not a training config field"),
        ("search.space.nope.x={uniform: [0, 1]}", "search.space.nope.x", "not a training config field"),
        ("search.space.optim.lr.x={choice: [1]}", "search.space.optim.lr.x", "lr is not a section"),
        ("search.space.optim.lr={choice: [abc]}", "search.space.optim.lr", "expected a number"),
        ("search.space.scm.alpha={loguniform: [0, 1]}", "search.space.scm.alpha", "low > 0"),
        ("search.space.scm.alpha={normal: [0, 1]}", "search.space.scm.alpha", "unknown distribution"),
        ("search.space.scm.num_blocks={randint: [-1, 4]}", "search.space.scm.num_blocks", "must be >= 0"),
        ("search.space.scm.iterations_first={uniform: [1, 4]}", "search.space.scm.iterations_first", "integers"),
        ("search.space.ray.num_workers={choice: [1, 2]}", "search.space.ray.num_workers", "fixed"),
        ("search.searcher=grid", "search.space.optim.lr", "enumerates lists only"),
        ("search.scheduler.grace_period=3", "search.scheduler.grace_period", "never stops"),
        ("search.resume=true", "search.resume", "needs search.name"),
        ("search.space.train.epochs={uniform: [2, 6]}", "search.space.train.epochs", "integer field"),
        ("search.space.scm.num_blocks={loguniform: [1, 4]}", "search.space.scm.num_blocks", "integer field"),
    ],
)
def test_bad_search_entries_name_the_field(override, key, fragment):
    with pytest.raises(ConfigError) as info:
        _load(override)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_optuna_refuses_what_it_cannot_sample():
    with pytest.raises(ConfigError, match="grid_search needs searcher random or grid"):
        _load("search.searcher=optuna", "search.space.data.batch_size={grid_search: [16, 32]}")
    with pytest.raises(ConfigError, match="scalar choices"):
        _load("search.searcher=optuna", "search.space.optim.betas={choice: [[0.9, 0.99]]}")
    assert _load("search.searcher=optuna").search.searcher == "optuna"


def test_iteration_counts_follow_the_block_count():
    base = _load().base_dict()  # scm: 4 blocks, iterations [16, 4, 4, 4]
    assert trial_config(base, {"scm.num_blocks": 2}).scm.iterations == [16, 4]
    assert trial_config(base, {"scm.num_blocks": 0}).scm.num_blocks == 0
    cfg = trial_config(base, {"scm.num_blocks": 3, "scm.iterations_first": 8, "scm.iterations_rest": 2})
    assert cfg.scm.block_iterations() == [8, 2, 2]
    assert trial_config(base, {"scm.iterations_rest": 6}).scm.iterations == [16, 6, 6, 6]
    assert trial_config(base, {"optim.lr": 1e-4}).scm.iterations == [16, 4, 4, 4]  # untouched


def test_dotted_and_nested_space_entries_are_the_same():
    cfg = _load("search.space.optim.weight_decay={uniform: [0.0, 0.1]}")
    assert cfg.search.space["optim.weight_decay"] == {"uniform": [0.0, 0.1]}
    with pytest.raises(ConfigError, match="search either scm.iterations"):
        _load("search.space.scm.iterations={choice: [[4, 4, 4, 4]]}")


def test_searched_iterations_and_block_count_are_refused_together():
    """trial_dict rebuilds scm.iterations for each sampled block count: a searched
    scm.iterations would be overwritten without a word."""
    with pytest.raises(ConfigError) as info:
        _load("search.space={scm.num_blocks: {choice: [2, 4]}, scm.iterations: {choice: [[8], [4]]}}")
    assert info.value.key == "search.space.scm.iterations"
    assert "scm.iterations_first / scm.iterations_rest instead" in str(info.value)
    cfg = _load("search.space={scm.iterations: {choice: [[8], [16, 4, 4, 4]]}}")  # alone it is fine
    assert cfg.search.space == {"scm.iterations": {"choice": [[8], [16, 4, 4, 4]]}}


@pytest.mark.parametrize(
    "overrides,max_t",
    [
        ([], 3),  # the base train.epochs
        (["search.space.train.epochs={choice: [3, 10]}"], 10),
        (["search.space.train.epochs={grid_search: [5, 2]}"], 5),
        (["search.space.train.epochs={randint: [2, 6]}"], 6),  # randint includes its upper end
        (["search.space.train.epochs={choice: [3, 10]}", "search.scheduler.max_t=4"], 4),
        (["search.space.train.epochs={choice: [3, 10]}", "search.scheduler.grace_period=5"], 10),
    ],
)
def test_asha_max_t_reaches_the_longest_trial(overrides, max_t):
    assert _load(*overrides).asha_max_t() == max_t


def test_build_scheduler_uses_the_longest_searched_epochs():
    pytest.importorskip("ray.tune")
    from scm_ray.tune.search import build_scheduler

    scheduler = build_scheduler(_load("search.space.train.epochs={choice: [3, 10]}"))
    assert scheduler._max_t == 10  # a 10-epoch trial is not cut at the base config's 3


@pytest.mark.parametrize(
    "overrides,key,fragment",
    [
        (["search.space.train.epochs={choice: [3, 10]}", "search.scheduler.grace_period=10"],
         "search.scheduler.grace_period", "must be < max_t=10"),
        (["search.space.train.epochs={randint: [2, 6]}", "search.scheduler.max_t=7"],
         "search.scheduler.max_t", "the largest search.space.train.epochs=6"),
        (["search.scheduler.max_t=4"], "search.scheduler.max_t", "must be <= train.epochs=3"),
        (["search.space.train.epochs={choice: [3, 10]}", "search.scheduler.max_t=4",
          "search.scheduler.grace_period=4"], "search.scheduler.grace_period", "must be < max_t=4"),
    ],
)
def test_asha_settings_against_searched_epochs_fail_at_load(overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        _load(*overrides)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_conflicting_combinations_fail_at_load():
    """Each value is fine alone; start_epoch 2 with 2 epochs would never train the SCM."""
    with pytest.raises(ConfigError) as info:
        _load("search.space={train.epochs: {choice: [2, 4]}, scm.start_epoch: {choice: [0, 2]}}")
    assert info.value.key == "search.space.scm.start_epoch"
    assert "'train.epochs': 2, 'scm.start_epoch': 2" in str(info.value)
    # A range's ends stand for it: min_lr 1e-3 above lr's low end 3e-4.
    with pytest.raises(ConfigError, match="search.space.optim.min_lr: the trial"):
        _load("search.space.optim.min_lr={choice: [0.0, 1.0e-3]}")
    assert _load("search.space={train.epochs: {choice: [3, 4]}, scm.start_epoch: {choice: [0, 2]}}")


def test_large_spaces_are_checked_entry_by_entry_only():
    lists = ", ".join(f"optim.{k}: {{choice: [0.1, 0.2, 0.3, 0.4, 0.5]}}" for k in ("weight_decay", "grad_clip"))
    # 5 * 5 * 2 (randint's ends) * 6 = 300 combinations: the start_epoch / epochs conflict
    # (start 5 in a 1-epoch trial) is left to the trial.
    cfg = _load("train.epochs=12", "search.space={%s, train.epochs: {randint: [1, 12]}, "
                "scm.start_epoch: {choice: [0, 1, 2, 3, 4, 5]}}" % lists)
    assert cfg.asha_max_t() == 12


def test_exponent_numbers_without_a_dot_are_numbers():
    cfg = _load("search.space={optim.lr: {loguniform: [1e-5, 1e-3]}, optim.eps: {choice: [1e-8, 1e-6]}}")
    assert cfg.search.space == {"optim.lr": {"loguniform": [1e-5, 1e-3]},
                                "optim.eps": {"choice": [1e-8, 1e-6]}}
