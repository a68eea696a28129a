"""Self-describing checkpoints: the model is rebuilt from the checkpoint alone."""

import pytest
import torch

from scm_ray.checkpoint import (
    CheckpointError,
    CheckpointUnavailable,
    load_checkpoint,
    load_train_state,
    model_from_checkpoint,
    save_checkpoint,
)
from scm_ray.config import TrainJobConfig, load_config, to_dict
from scm_ray.model import build_model, param_groups

OVERRIDES = ["model.name=vit_tiny_patch16_224", "model.img_size=32", "model.patch_size=8",
             "model.embed_dim=48", "model.depth=2", "model.num_heads=3", "model.num_classes=3",
             "data.crop_size=32", "data.resize_size=36", "scm.num_blocks=2", "scm.iterations=[4]"]


def test_round_trip_rebuilds_identical_model(tmp_path):
    cfg = load_config(TrainJobConfig, None, OVERRIDES)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.scm)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "ckpt", model, to_dict(cfg), epoch=3, global_step=42,
                    metrics={"val/gt_known": torch.tensor(55.0)}, optimizer=opt)
    data = load_checkpoint(tmp_path / "ckpt")
    assert data.epoch == 3 and data.global_step == 42 and data.metrics["val/gt_known"] == 55.0
    assert data.model_config == cfg.model
    rebuilt = model_from_checkpoint(tmp_path / "ckpt").eval()
    assert rebuilt.scm is None
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(images), model(images))
    with_scm = model_from_checkpoint(tmp_path / "ckpt", with_scm=True)
    assert torch.equal(with_scm.scm.blocks[1].lam, model.scm.blocks[1].lam)
    assert "state" in load_train_state(tmp_path / "ckpt")["optimizer"]


def test_bad_checkpoints_fail_with_the_file_named(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad/model.pt: cannot be read") as corrupt:
        load_checkpoint(bad)
    assert not isinstance(corrupt.value, CheckpointUnavailable)  # the file itself is broken
    with pytest.raises(CheckpointUnavailable, match="file not found"):  # may be there on another try
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "only-meta").mkdir()
    with pytest.raises(CheckpointUnavailable, match="only-meta/model.pt: file not found"):
        load_checkpoint(tmp_path / "only-meta")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an scm-ray checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format_version": 99, "config": {}, "model": {}, "epoch": 0}, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")
