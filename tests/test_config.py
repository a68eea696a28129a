"""Typed configs: strict loading, clear errors, overrides, the Ray round trip, shipped YAMLs."""

from pathlib import Path

import pytest

from scm_ray.config import (
    ConfigError,
    EvaluateJobConfig,
    SCMConfig,
    TrainJobConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_config,
    to_dict,
)
from scm_ray.config_cli import job_config_class

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "jobs" / "configs").glob("*.yaml"))


def test_defaults_are_the_reference_settings():
    cfg = TrainJobConfig()
    assert cfg.scm.num_blocks == 4 and cfg.scm.iterations == [16, 4, 4, 4]
    assert cfg.scm.alpha == 0.002 and cfg.scm.lambda_init == 1.0 and cfg.scm.beta_init == 0.5
    assert cfg.optim.eps == 1e-8 and cfg.optim.weight_decay == 0.05
    assert cfg.model.grid_size == (14, 14)


@pytest.mark.parametrize(
    "override,key,fragment",
    [
        ("scm.nope=1", "scm.nope", "allowed keys: num_blocks"),
        ("nope.x=1", "nope", "allowed keys: model, scm"),
        ("scm.alpha=-1", "scm.alpha", "must be > 0"),
        ("scm.num_blocks=two", "scm.num_blocks", "expected an integer"),
        ("scm.iterations=[16,4]", "scm.iterations", "one count per block (4)"),
        ("optim.schedule=linear", "optim.schedule", "'step', 'cosine', 'constant'"),
        ("model.img_size=100", "model.img_size", "multiple of patch_size=16"),
        ("data.crop_size=64", "data.crop_size", "must equal model.img_size=224"),
        ("ray.num_workers=-1", "ray.num_workers", "must be >= 0"),
        ("train.compile=yes please", "train.compile", "expected true or false"),
        ("scm=3", "scm", "expected a mapping"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, key, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, None, [override])
    assert info.value.key == key
    assert fragment in str(info.value)


def test_overrides_parse_yaml_values():
    cfg = load_config(TrainJobConfig, None, [
        "scm.num_blocks=3", "scm.iterations=[16, 4, 4]", "optim.lr=1e-4", "train.compile=true",
        "model.embed_dim=null", "ray.storage_path=s3://bucket/runs",
    ])
    assert cfg.scm.block_iterations() == [16, 4, 4]
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.compile is True and cfg.ray.storage_path == "s3://bucket/runs"
    assert load_config(TrainJobConfig, None, ["scm.iterations=[3]"]).scm.block_iterations() == [3] * 4
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides({}, ["scm.num_blocks"])


def test_round_trip_through_a_dict_and_yaml(tmp_path):
    cfg = load_config(TrainJobConfig, None, ["scm.num_blocks=2", "scm.iterations=[8, 2]"])
    again = from_dict(TrainJobConfig, to_dict(cfg))  # the Ray boundary
    assert again == cfg
    path = tmp_path / "cfg.yaml"
    dump_yaml(cfg, path)
    assert load_config(TrainJobConfig, path) == cfg


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("scm:\n  alpha: 0\n")
    with pytest.raises(ConfigError, match=r"scm.alpha: must be > 0.*bad.yaml"):
        load_config(TrainJobConfig, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainJobConfig, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainJobConfig, tmp_path / "list.yaml")


def test_zero_blocks_is_valid_no_scm():
    cfg = from_dict(SCMConfig, {"num_blocks": 0})
    assert cfg.block_iterations() == []


def test_there_are_shipped_configs():
    kinds = {p.name.split("_", 1)[0] for p in SHIPPED}
    assert "train" in kinds


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_yaml_loads(path):
    load_config(job_config_class(path), path)


def test_paper_recipes_validate_on_test_with_the_paper_protocol_in_float32():
    """The published numbers' protocol: checkpoint and tau chosen on the test split itself."""
    for name, base in (("paper_cub.yaml", "train_cub.yaml"), ("paper_imagenet.yaml", "train_imagenet.yaml")):
        assert job_config_class(REPO / "jobs" / "configs" / name) is TrainJobConfig
        cfg = load_config(TrainJobConfig, REPO / "jobs" / "configs" / name)
        recipe = load_config(TrainJobConfig, REPO / "jobs" / "configs" / base)
        assert (cfg.data.val_split, cfg.eval.protocol, cfg.train.precision) == ("test", "paper", "fp32")
        assert (cfg.optim, cfg.model, cfg.scm, cfg.train.epochs) == (recipe.optim, recipe.model, recipe.scm, recipe.train.epochs)
    cfg = load_config(EvaluateJobConfig, REPO / "jobs" / "configs" / "evaluate_paper.yaml")
    assert (cfg.eval.protocol, cfg.eval.threshold_step, cfg.ray.precision) == ("paper", 0.01, "fp32")


def test_config_error_survives_pickling():
    """Ray ships a worker's or actor's exception to the driver by pickling it."""
    import pickle

    err = pickle.loads(pickle.dumps(ConfigError("data.root", "dataset folder not found")))
    assert isinstance(err, ConfigError) and err.key == "data.root" and str(err) == "data.root: dataset folder not found"


def test_several_gpu_workers_need_a_whole_gpu_each():
    with pytest.raises(ConfigError, match="ray.gpus_per_worker: must be >= 1 with use_gpu"):
        load_config(TrainJobConfig, REPO / "jobs" / "configs" / "train_cub.yaml",
                    ["ray.use_gpu=true", "ray.num_workers=2", "ray.gpus_per_worker=0.5"])
    one = load_config(TrainJobConfig, REPO / "jobs" / "configs" / "train_cub.yaml",
                      ["ray.use_gpu=true", "ray.num_workers=1", "ray.gpus_per_worker=0.5"])
    assert one.ray.gpus_per_worker == 0.5  # one rank may share a GPU with something else


def test_configs_are_frozen_and_derived_with_replace():
    import dataclasses

    cfg = TrainJobConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0  # type: ignore[misc]
    derived = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=1e-3))
    assert derived.optim.lr == 1e-3 and cfg.optim.lr == 5e-5
    with pytest.raises(ConfigError, match="lr: must be > 0"):  # replace validates like loading
        dataclasses.replace(cfg.optim, lr=-1.0)


def test_base_key_chains_relative_to_the_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("scm:\n  num_blocks: 2\n  iterations: [8, 2]\noptim:\n  lr: 1.0e-3\n")
    (tmp_path / "sub" / "mid.yaml").write_text("base: ../root.yaml\noptim:\n  weight_decay: 0.01\n")
    (tmp_path / "sub" / "top.yaml").write_text("base: mid.yaml\noptim:\n  lr: 2.0e-3\n")
    cfg = load_config(TrainJobConfig, tmp_path / "sub" / "top.yaml", ["optim.eps=1e-6"])
    assert cfg.scm.block_iterations() == [8, 2]  # from the root, two files up the chain
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps) == (2e-3, 0.01, 1e-6)


def test_base_cycles_and_missing_bases_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="base files form a cycle"):
        load_config(TrainJobConfig, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="config file not found: .*nowhere.yaml"):
        load_config(TrainJobConfig, tmp_path / "c.yaml")


def test_tune_yaml_extends_the_train_yaml():
    from scm_ray.tune.config import TuneJobConfig

    tune = load_config(TuneJobConfig, REPO / "jobs" / "configs" / "tune_synthetic.yaml")
    train = load_config(TrainJobConfig, REPO / "jobs" / "configs" / "train_synthetic.yaml")
    assert "base: train_synthetic.yaml" in (REPO / "jobs" / "configs" / "tune_synthetic.yaml").read_text()
    assert tune.model == train.model and tune.data == train.data
    assert tune.train.epochs == 3 and tune.ray.num_workers == 0 and tune.optim.schedule == "cosine"


@pytest.mark.parametrize("override", ["optim.lr=.inf", "optim.weight_decay=.nan", "optim.eps=-.inf",
                                      "optim.grad_clip=.nan", "scm.alpha=.inf", "scm.beta_init=.inf",
                                      "scm.lambda_init=.nan", "optim.betas=[0.9, .nan]"])
def test_non_finite_numbers_are_refused(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match="must be a finite number") as info:
        load_config(TrainJobConfig, None, [override])
    assert info.value.key.startswith(key)


@pytest.mark.parametrize("override", ["scm.lambda_init=0", "scm.lambda_init=-1", "scm.beta_init=0"])
def test_lambda_and_beta_init_must_be_positive(override):
    with pytest.raises(ConfigError, match="must be a finite number > 0"):
        load_config(TrainJobConfig, None, [override])


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "../up", "a\\b"])
def test_run_and_search_names_are_single_folder_names(name):
    from scm_ray.tune.config import TuneJobConfig

    with pytest.raises(ConfigError, match="ray.name: must be a single folder name"):
        load_config(TrainJobConfig, None, [f"ray.name={name}"])
    with pytest.raises(ConfigError, match="search.name: must be a single folder name"):
        load_config(TuneJobConfig, REPO / "jobs" / "configs" / "tune_synthetic.yaml", [f"search.name={name}"])
    assert load_config(TrainJobConfig, None, ["ray.name=run-1.b"]).ray.name == "run-1.b"


def test_errors_name_the_override_not_the_file():
    path = REPO / "jobs" / "configs" / "train_synthetic.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(TrainJobConfig, path, ["optim.lr=abc"])
    assert str(info.value) == "optim.lr: expected a number, got 'abc' (from --set optim.lr=abc)"
    with pytest.raises(ConfigError) as info:  # a section set whole: the field inside is named too
        load_config(TrainJobConfig, path, ["optim={lr: -1}"])
    assert str(info.value).startswith("optim.lr: must be > 0") and "(from --set optim={lr: -1})" in str(info.value)
    with pytest.raises(ConfigError) as info:  # a value from the file still names the file
        load_config(TrainJobConfig, path, ["optim.eps=1e-6", "scm.num_blocks=3"])
    assert "scm.iterations" in str(info.value) and "train_synthetic.yaml" in str(info.value)


def test_cli_config_errors_exit_2_naming_the_override_without_ray(capsys):
    import sys

    from scm_ray.cli import main

    assert main(["train", "--config", "jobs/configs/train_synthetic.yaml", "--set", "optim.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: expected a number, got 'abc' (from --set optim.lr=abc)" in err
    assert "Traceback" not in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # no Ray started


def test_a_non_vit_model_is_refused_by_name_before_ray(capsys):
    import sys

    from scm_ray.cli import main

    assert main(["train", "--config", "jobs/configs/train_synthetic.yaml", "--set", "model.name=resnet50"]) == 2
    err = capsys.readouterr().err
    assert "model.name: 'resnet50' is a ResNet, not a timm ViT/DeiT" in err
    assert "Traceback" not in err and "TypeError" not in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # no Ray started


@pytest.mark.parametrize("command,config,override,message", [
    ("train", "train_synthetic.yaml", "optim.lr=.inf", "optim.lr: must be a finite number, got inf"),
    ("train", "train_synthetic.yaml", "scm.lambda_init=.nan", "scm.lambda_init: must be a finite number"),
    ("train", "train_synthetic.yaml", "scm.beta_init=-1", "scm.beta_init: must be a finite number > 0"),
    ("train", "train_synthetic.yaml", "ray.name=..", "ray.name: must be a single folder name"),
    ("tune", "tune_synthetic.yaml", "search.name=../x", "search.name: must be a single folder name"),
])
def test_bad_numbers_and_names_exit_2_naming_the_field(capsys, command, config, override, message):
    import sys

    from scm_ray.cli import main

    assert main([command, "--config", f"jobs/configs/{config}", "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and f"(from --set {override})" in err and "Traceback" not in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_run_shorter_than_the_scm_warm_up_loads_and_is_flagged():
    """A smoke run of a warm-up recipe (scm.start_epoch 2, train.epochs 1) is allowed: the
    command says the SCM stays off (a search refuses such trials: tests/tune/test_space.py)."""
    from scm_ray.config import TrainJobConfig, load_config

    shipped = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "train_synthetic.yaml"
    short = load_config(TrainJobConfig, shipped, ["train.epochs=1"])
    assert short.scm.start_epoch == 2 and short.scm_never_active()
    assert not load_config(TrainJobConfig, shipped, ["train.epochs=3"]).scm_never_active()
    assert not load_config(TrainJobConfig, shipped, ["train.epochs=1", "scm.num_blocks=0"]).scm_never_active()


def test_a_learning_rate_the_optimizer_cannot_take_is_refused():
    with pytest.raises(ConfigError, match=r"must be <= 1e\+30 \(AdamW's float32 arithmetic fails") as info:
        load_config(TrainJobConfig, None, ["optim.lr=3e37"])
    assert info.value.key == "optim.lr"
    assert load_config(TrainJobConfig, None, ["optim.lr=1e30"]).optim.lr == 1e30
