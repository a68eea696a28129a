"""Typed configs: strict loading, clear errors, overrides, the Ray round trip, shipped YAMLs."""

from pathlib import Path

import pytest

from scm_ray.config import (
    JOB_CONFIGS,
    ConfigError,
    SCMConfig,
    TrainJobConfig,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_config,
    to_dict,
)

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
        ("ray.num_workers=0", "ray.num_workers", "must be >= 1"),
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


def test_zero_blocks_is_valid_ts_cam():
    cfg = from_dict(SCMConfig, {"num_blocks": 0})
    assert cfg.block_iterations() == []


def test_there_are_shipped_configs():
    kinds = {p.name.split("_", 1)[0] for p in SHIPPED}
    assert "train" in kinds


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_yaml_loads(path):
    kind = path.name.split("_", 1)[0]
    assert kind in JOB_CONFIGS, f"{path.name}: name must start with one of {sorted(JOB_CONFIGS)}"
    load_config(JOB_CONFIGS[kind], path)


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
