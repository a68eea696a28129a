"""`scm-ray config show`: every field with its help, loadable back; the lr per epoch."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from scm_ray.cli import main
from scm_ray.config import TrainJobConfig, load_config
from scm_ray.config.loader import field_help
from scm_ray.config_cli import job_config_class

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "jobs" / "configs").glob("*.yaml")) + [REPO / "scm_ray" / "demo" / "train_synthetic.yaml"]


def _fields(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _fields(hints[f.name], f"{prefix}{f.name}.")
        yield f"{prefix}{f.name}", f


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_show_round_trips_every_shipped_yaml(path, tmp_path, capsys):
    assert main(["config", "show", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    shown = tmp_path / path.name  # same name, so the same job kind
    shown.write_text(text)
    cls = job_config_class(path)
    assert load_config(cls, shown) == load_config(cls, path)
    flat_lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for name, f in _fields(cls):  # every field shown, with its help beside it
        assert field_help(f), f"{name} has no help text"
        leaf = name.rsplit(".", 1)[-1]
        assert any(line.strip().startswith(f"{leaf}:") and f"# {field_help(f)}" in line for line in flat_lines), name


def test_show_applies_overrides(tmp_path, capsys):
    path = REPO / "jobs" / "configs" / "train_synthetic.yaml"
    assert main(["config", "show", "--config", str(path), "--set", "optim.lr=2e-3", "--set", "scm.num_blocks=0"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["optim"]["lr"] == 2e-3 and data["scm"]["num_blocks"] == 0


def test_show_schedule_prints_the_lr_in_effect_during_each_epoch(capsys):
    assert main(["config", "show", "--config", str(REPO / "jobs" / "configs" / "train_cub.yaml"),
                 "--schedule"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    cfg = load_config(TrainJobConfig, REPO / "jobs" / "configs" / "train_cub.yaml")
    assert [int(r[0]) for r in rows] == list(range(1, cfg.train.epochs + 1))
    assert [float(r[1]) for r in rows] == [5e-5] * 29 + [5e-6]  # the released code's CUB schedule


def test_show_refuses_a_bad_override_naming_it(capsys):
    path = REPO / "jobs" / "configs" / "train_synthetic.yaml"
    assert main(["config", "show", "--config", str(path), "--set", "optim.lr=abc"]) == 2
    assert "(from --set optim.lr=abc)" in capsys.readouterr().err
