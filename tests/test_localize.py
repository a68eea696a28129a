"""Localizer and `scm-ray localize` on real checkpoints of a short real training run (synthetic
data, a real local Ray), evaluated by the real evaluation pool: the boxes on the test images agree
with what the evaluation measured on the same images, every input form gives the same answer,
and a checkpoint written before checkpoints described themselves still localizes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("ray")

from scm_ray import Localizer  # noqa: E402
from scm_ray.checkpoint import EVALUATION_FILE, MODEL_FILE, load_checkpoint, model_from_checkpoint  # noqa: E402
from scm_ray.config import EvaluateJobConfig, TrainJobConfig, load_config  # noqa: E402
from scm_ray.metrics import box_iou, boxes_from_scoremap  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]
STEP = 0.05


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from scm_ray.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("loc-data")
    # raw pixels in the .beton: the evaluation sees exactly the decoded test files' pixels
    prepare_synthetic(out, num_train=256, num_val=48, num_test=48, image_size=64, num_classes=4,
                      seed=0, write_mode="raw", progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(local_ray, dataset, tmp_path_factory) -> Path:
    """The last checkpoint of a real 2-epoch training, scored by the evaluation pool."""
    from scm_ray.evaluate import evaluate_checkpoints
    from scm_ray.train.trainer import run_training

    storage = tmp_path_factory.mktemp("loc-runs")
    cfg = load_config(TrainJobConfig, REPO / "jobs/configs/train_synthetic.yaml", [
        f"data.root={dataset}", f"ray.storage_path={storage}", "ray.name=loc", "train.epochs=2",
        "scm.start_epoch=0", "optim.schedule=cosine",
        "ray.num_workers=1", f"eval.threshold_step={STEP}", "data.eval_batch_size=48"])
    outcome = run_training(cfg)
    assert outcome.error is None, outcome.error
    out = tmp_path_factory.mktemp("loc-eval")
    eval_cfg = load_config(EvaluateJobConfig, REPO / "jobs/configs/evaluate_synthetic.yaml", [
        f"eval.threshold_step={STEP}", "ray.num_actors=1"])
    evaluate_checkpoints(outcome.run_dir, str(out), eval_cfg, data=str(dataset))
    return sorted(Path(outcome.run_dir).glob("checkpoint_epoch*"))[-1]


def _test_records(dataset: Path) -> list[dict]:
    return [r for r in pq.read_table(dataset / "records.parquet").to_pylist() if r["split"] == "test"]


def _evaluation_boxes(checkpoint: Path, dataset: Path, tau: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """What the evaluation saw per test image: top-1 class and the top-1 map's box at tau, on the
    stored test.beton (the evaluation's own loader and map code)."""
    from scm_ray.data.loaders import eval_loader
    from scm_ray.inference import batch_maps

    model = model_from_checkpoint(checkpoint).eval()
    top1, boxes = [], []
    for images, labels, gt, count, _index in eval_loader(str(dataset / "test.beton"), 48, 1):
        maps = batch_maps(model, images, labels, gt, count)
        top1 += list(maps.topk[:, 0])
        boxes += [boxes_from_scoremap(m, [tau])[0][0] for m in maps.top1_maps]
    return np.array(top1), boxes


def test_boxes_agree_with_the_evaluation(checkpoint, dataset):
    records = _test_records(dataset)
    note = json.loads((checkpoint / EVALUATION_FILE).read_text())
    localizer = Localizer.from_checkpoint(checkpoint, device="cpu")
    assert localizer.tau == note["test/gt_known_tau"] and localizer.tau_source.startswith("evaluation (wsol")
    assert localizer.class_names == tuple(json.loads((dataset / "dataset.json").read_text())["class_names"])

    preds = localizer.predict([dataset / r["path"] for r in records], batch_size=20)
    assert len(preds) == len(records)
    top1, eval_boxes = _evaluation_boxes(checkpoint, dataset, localizer.tau)
    same_class = same_hit = 0
    for p, r, c, e in zip(preds, records, top1, eval_boxes):
        assert p.cam.shape == (r["height"], r["width"]) and p.cam.dtype == np.float32
        assert p.boxes.shape[1] == 4 and p.class_name == localizer.class_names[p.class_index]
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 <= x1 < r["width"] and 0 <= y0 <= y1 < r["height"]
        gt = np.asarray(r["boxes"], dtype=np.float64)
        same_class += p.class_index == c
        same_hit += (box_iou(p.box[None], gt).max() >= 0.5) == (box_iou(e[None], gt).max() >= 0.5)
    # same pixels, same model: only float summation order (batch composition) may differ, which
    # can move a map value across tau on at most a rare borderline image
    assert same_class == len(records) and same_hit >= len(records) - 1, (same_class, same_hit)


def test_paths_pil_images_and_arrays_give_the_same_prediction(checkpoint, dataset):
    from PIL import Image

    localizer = Localizer.from_checkpoint(checkpoint)
    path = dataset / _test_records(dataset)[0]["path"]
    with Image.open(path) as im:
        pil = im.convert("RGB")
    by_path, by_pil, by_array = localizer.predict([path, pil, np.asarray(pil)])
    assert by_path.path == str(path) and by_pil.path is None
    for other in (by_pil, by_array):
        assert other.class_index == by_path.class_index and np.array_equal(other.boxes, by_path.boxes)
        assert np.allclose(other.cam, by_path.cam)
    with pytest.raises(ValueError, match="image 0: an image array must be uint8"):
        localizer.predict([np.zeros((8, 8, 3), np.float32)])


def test_localize_cli_writes_predictions_and_overlays(checkpoint, dataset, tmp_path):
    out = tmp_path / "loc"
    proc = subprocess.run(
        [sys.executable, "-m", "scm_ray.cli", "localize", "--checkpoint", str(checkpoint),
         "--images", str(dataset / "images" / "test"), "--out", str(out), "--batch-size", "16", "--overlays"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = pq.read_table(out / "predictions.parquet")
    assert table.column_names == ["path", "class", "name", "score", "boxes", "tau", "width", "height"]
    assert str(table.schema.field("class").type) == "int64" and str(table.schema.field("score").type) == "double"
    rows = table.to_pylist()
    records = _test_records(dataset)
    assert sorted(r["path"] for r in rows) == sorted(str(dataset / r["path"]) for r in records)
    api = {p.path: p for p in Localizer.from_checkpoint(checkpoint).predict([r["path"] for r in rows[:8]])}
    for row in rows[:8]:
        assert row["class"] == api[row["path"]].class_index
        assert np.array_equal(np.asarray(row["boxes"]), api[row["path"]].boxes)
    assert len(list((out / "overlays").glob("*.png"))) == len(rows)


def test_older_checkpoint_falls_back(checkpoint, dataset, tmp_path):
    """A model.pt without the inference description and no evaluation next to it: class names
    from the dataset the config names, the tau its validation recorded; with the dataset out of
    reach, numbered class names."""
    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    (old / EVALUATION_FILE).unlink()
    payload = torch.load(old / MODEL_FILE, weights_only=True)
    payload.pop("inference")
    torch.save(payload, old / MODEL_FILE)
    localizer = Localizer.from_checkpoint(old)
    data = load_checkpoint(old)
    assert localizer.tau == data.metrics["val/gt_known_tau"] and localizer.tau_source.startswith("checkpoint")
    assert localizer.class_names == load_checkpoint(checkpoint).inference_info.class_names
    assert localizer.info.preprocess.size == 64

    payload["config"]["data"]["root"] = str(tmp_path / "gone")
    torch.save(payload, old / MODEL_FILE)
    assert Localizer.from_checkpoint(old).class_names == ("class 0", "class 1", "class 2", "class 3")
