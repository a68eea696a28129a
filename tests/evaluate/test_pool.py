"""The actor pool on a real local Ray (2 CPUs) over real checkpoints from a short synthetic
training and real FFCV files: numbers identical to a single-process evaluation, a corrupt
checkpoint as a failed row, re-runs that reuse the table, parallel actors, and an actor killed
mid-run.

Why one module-scoped Ray session, tree and first run: starting Ray, training and compiling
FFCV pipelines cost tens of seconds each on 2 cores; every test reads the same results.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")

from scm_ray.checkpoint import model_from_checkpoint  # noqa: E402
from scm_ray.config import EvaluateJobConfig, TrainJobConfig, load_config  # noqa: E402
from scm_ray.evaluate import evaluate_checkpoints  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
BATCH = 16
STEP = 0.05
GOOD = ["checkpoint_epoch0001", "checkpoint_epoch0002", "checkpoint_epoch0003"]
CORRUPT = "checkpoint_epoch0099"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from scm_ray.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("eval-data")
    prepare_synthetic(out, num_train=128, num_val=48, num_test=48, image_size=64, num_classes=4,
                      seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def run_dir(local_ray, dataset, tmp_path_factory) -> Path:
    """Three checkpoints of a real 3-epoch training (one worker) plus a truncated model.pt."""
    from scm_ray.train.trainer import run_training

    storage = tmp_path_factory.mktemp("eval-runs")
    cfg = load_config(TrainJobConfig, REPO / "jobs/configs/train_synthetic.yaml", [
        f"data.root={dataset}", f"ray.storage_path={storage}", "ray.name=tiny",
        "model.embed_dim=48", "model.depth=2", "model.num_heads=3",
        "scm.num_blocks=2", "scm.iterations=[4, 2]", "scm.start_epoch=1",
        "data.batch_size=32", f"data.eval_batch_size={BATCH}", "train.epochs=3",
        "optim.schedule=constant", "optim.warmup_epochs=0", "optim.lr=2e-3",
        "ray.num_workers=1", "ray.num_to_keep=3", f"eval.threshold_step={STEP}",
    ])
    outcome = run_training(cfg)
    assert outcome.error is None and outcome.epochs_done == 3
    run = Path(outcome.run_dir)
    assert sorted(p.name for p in run.glob("checkpoint_epoch*")) == GOOD
    corrupt = run / CORRUPT
    corrupt.mkdir()
    (corrupt / "model.pt").write_bytes((run / GOOD[0] / "model.pt").read_bytes()[:4096])  # truncated
    return run


def _cfg(*extra: str) -> EvaluateJobConfig:
    return load_config(EvaluateJobConfig, REPO / "jobs/configs/evaluate_synthetic.yaml", [
        f"eval.threshold_step={STEP}", f"data.batch_size={BATCH}", "ray.num_actors=2", *extra])


@pytest.fixture(scope="module")
def reference(run_dir, dataset) -> dict[str, tuple[dict, dict]]:
    """Single-process "wsol" numbers per checkpoint: (held-out summary, test summary), with the
    plain evaluate_split path the training loop uses."""
    from scm_ray.data.loaders import eval_loader
    from scm_ray.inference import evaluate_split

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a 1-CPU actor
    try:
        val = eval_loader(dataset / "val.beton", BATCH, 1)
        test = eval_loader(dataset / "test.beton", BATCH, 1)
        out = {}
        for name in GOOD:
            model = model_from_checkpoint(run_dir / name).eval()
            kwargs = dict(device=torch.device("cpu"), num_classes=4, threshold_step=STEP, return_accumulator=True)
            _, val_acc = evaluate_split(model, val, **kwargs)
            _, test_acc = evaluate_split(model, test, **kwargs)
            heldout = val_acc.compute("wsol")
            out[name] = (heldout.summary(), test_acc.compute("wsol", thresholds_from=heldout).summary())
        return out
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def first(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    return evaluate_checkpoints(str(run_dir), str(out), _cfg()), out


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {Path(r["checkpoint"]).name: r for r in rows}


def _assert_matches(rows: list[dict], reference: dict) -> None:
    for name, (heldout, test) in reference.items():
        row = rows[name]
        assert row["status"] == "ok", row
        for key, value in test.items():
            assert row[key] == value, (name, key)
        for key, value in heldout.items():
            if key not in ("protocol", "tau_source"):
                assert row[f"heldout_{key}"] == value, (name, key)


def test_three_ok_rows_identical_to_one_process_and_one_failed(first, reference, run_dir):
    outcome, out = first
    rows = _by_name(outcome.rows)
    assert sorted(rows) == sorted(GOOD + [CORRUPT])
    _assert_matches(rows, reference)
    bad = rows[CORRUPT]
    assert bad["status"] == "failed" and bad["error_kind"] == "checkpoint"
    assert f"{CORRUPT}/model.pt" in bad["error"] and bad["gt_known"] is None
    assert outcome.evaluated == 4 and outcome.reused == 0
    assert outcome.best["checkpoint"] in {str(run_dir / n) for n in GOOD}
    assert outcome.ranked_by == "heldout_gt_known"
    assert outcome.best["heldout_gt_known"] == max(h["gt_known"] for h, _ in reference.values())

    import pyarrow.parquet as pq

    table = pq.read_table(outcome.results_path).to_pylist()
    assert sorted(Path(r["checkpoint"]).name for r in table) == sorted(GOOD + [CORRUPT])
    for name in GOOD:
        row = rows[name]
        assert row["epoch"] == int(name[-4:]) and row["run"] == "tiny" and row["attempts"] == 1
        assert row["images_per_s"] > 0 and row["wall_s"] > 0 and row["gt_known_tau"] is not None
        for column in ("curves_png", "cams_png"):
            assert (out / row[column]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best: " + outcome.best["checkpoint"] in outcome.table


def test_two_actors_ran_at_the_same_time(first):
    outcome, _ = first
    rows = [r for r in outcome.rows if r["status"] == "ok" or r["error_kind"] == "checkpoint"]
    assert len({r["actor_id"] for r in rows}) == 2 and len({r["pid"] for r in rows}) == 2
    overlapping = [
        (a, b) for a in rows for b in rows
        if a["actor_id"] < b["actor_id"] and a["start_time"] < b["end_time"] and b["start_time"] < a["end_time"]
    ]
    assert overlapping, [(r["actor_id"], r["start_time"], r["end_time"]) for r in rows]


def test_a_second_run_evaluates_nothing_new(first, run_dir):
    outcome, out = first
    again = evaluate_checkpoints(str(run_dir), str(out), _cfg())
    assert again.evaluated == 0 and again.reused == 4
    assert [r["evaluated_at"] for r in again.rows] == [r["evaluated_at"] for r in outcome.rows]
    assert again.best["checkpoint"] == outcome.best["checkpoint"]


def test_a_killed_actor_has_its_checkpoint_retried(first, run_dir, reference, tmp_path):
    _, out = first
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    killed: list[str] = []

    def kill_one(status) -> None:
        """Once both actors are busy on their first checkpoint, kill one of them."""
        if not killed and len(status.running) == 2 and status.elapsed_s >= 6:
            name = sorted(status.running.values())[0]
            ray.kill(ray.get_actor(name))
            killed.append(name)

    outcome = evaluate_checkpoints(str(run_dir), str(copy), _cfg(), force=True, progress=kill_one)
    assert killed and outcome.evaluated == 4
    rows = _by_name(outcome.rows)
    _assert_matches(rows, reference)
    assert rows[CORRUPT]["status"] == "failed"
    assert max(r["attempts"] for r in outcome.rows) == 2
    assert killed[0] not in {r["actor_name"] for r in outcome.rows}


def test_paper_protocol_in_process_and_a_missing_dataset(run_dir, dataset, reference):
    """The evaluator without Ray: the "paper" protocol (test split only, same-split tau, top-1
    predicted maps) matches evaluate_split's, and a missing dataset is a failed report."""
    from scm_ray.data.loaders import eval_loader
    from scm_ray.evaluate.worker import CheckpointEvaluator
    from scm_ray.inference import evaluate_split

    evaluator = CheckpointEvaluator(_cfg("eval.protocol=paper", "report.plots=false"))
    report = evaluator.evaluate(str(run_dir / GOOD[-1]), str(dataset))
    model = model_from_checkpoint(run_dir / GOOD[-1]).eval()
    _, acc = evaluate_split(model, eval_loader(dataset / "test.beton", BATCH, 1), torch.device("cpu"), 4,
                            threshold_step=STEP, return_accumulator=True)
    expected = acc.compute("paper").summary()
    assert {k: report.row[k] for k in expected} == expected
    assert "heldout_gt_known" not in report.row and set(report.files) == {"result.json"}

    missing = evaluator.evaluate(str(run_dir / GOOD[0]), str(dataset / "nowhere"))
    assert missing.row["status"] == "failed" and missing.row["error_kind"] == "data"
    assert "nowhere" in missing.row["error"]
