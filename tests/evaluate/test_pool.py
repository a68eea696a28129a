"""The actor pool on a real local Ray (2 CPUs) over real checkpoints from a short synthetic
training and real FFCV files: numbers identical to a single-process evaluation, a corrupt
checkpoint as a failed row, re-runs that reuse the table, parallel actors, an actor killed
mid-run, a checkpoint that crashes every actor it is given (it fails alone), and actors that die
while starting.

Why one module-scoped Ray session, tree and first run: starting Ray, training and compiling
FFCV pipelines cost tens of seconds each on 2 cores; every test reads the same results.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

ray = pytest.importorskip("ray")

from scm_ray.checkpoint import model_from_checkpoint  # noqa: E402
from scm_ray.config import EvaluateJobConfig, TrainJobConfig, load_config  # noqa: E402
from scm_ray.evaluate import evaluate_checkpoints  # noqa: E402
from scm_ray.evaluate.pool import TEST_CRASH_ENV  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
BATCH = 16
STEP = 0.05
GOOD = ["checkpoint_epoch0001", "checkpoint_epoch0002", "checkpoint_epoch0003"]
CORRUPT = "checkpoint_epoch0099"
CRASH_MARKER = "CRASH_THIS_ACTOR"  # a checkpoint folder holding this file crashes its actor


@pytest.fixture(scope="module", autouse=True)
def crash_trigger():
    """Set before local_ray starts Ray (autouse runs first), so every actor process sees it."""
    previous = os.environ.get(TEST_CRASH_ENV)
    os.environ[TEST_CRASH_ENV] = CRASH_MARKER
    yield
    if previous is None:
        os.environ.pop(TEST_CRASH_ENV)
    else:
        os.environ[TEST_CRASH_ENV] = previous


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
            out[name] = (heldout.summary("val/"), test_acc.compute("wsol", thresholds_from=heldout).summary("test/"))
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
        for key, value in {**test, **heldout}.items():
            assert row[key] == value, (name, key)


def test_three_ok_rows_identical_to_one_process_and_one_failed(first, reference, run_dir):
    outcome, out = first
    rows = _by_name(outcome.rows)
    assert sorted(rows) == sorted(GOOD + [CORRUPT])
    _assert_matches(rows, reference)
    bad = rows[CORRUPT]
    assert bad["status"] == "failed" and bad["error_kind"] == "checkpoint"
    assert f"{CORRUPT}/model.pt" in bad["error"] and bad["test/gt_known"] is None
    assert outcome.evaluated == 4 and outcome.reused == 0
    assert outcome.best["checkpoint"] in {str(run_dir / n) for n in GOOD}
    assert outcome.ranked_by == "val/gt_known"
    assert outcome.best["val/gt_known"] == max(h["val/gt_known"] for h, _ in reference.values())

    import pyarrow.parquet as pq

    from scm_ray.results_schema import check_columns

    assert check_columns("results.parquet", pq.read_schema(outcome.results_path)) == []
    table = pq.read_table(outcome.results_path).to_pylist()
    assert sorted(Path(r["checkpoint"]).name for r in table) == sorted(GOOD + [CORRUPT])
    for name in GOOD:
        row = rows[name]
        assert row["epoch"] == int(name[-4:]) and row["run"] == "tiny" and row["attempts"] == 1
        assert row["images_per_s"] > 0 and row["wall_s"] > 0 and row["test/gt_known_tau"] is not None
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
    table = copy / "results.parquet"
    table.write_bytes(table.read_bytes()[:100])  # cut short: --force rebuilds it, keeping it beside
    killed: list[str] = []

    def kill_one(status) -> None:
        """Once both actors are busy on their first checkpoint, kill one of them."""
        if not killed and len(status.running) == 2 and status.elapsed_s >= 6:
            name = sorted(status.running.values())[0]
            ray.kill(ray.get_actor(name))
            killed.append(name)

    outcome = evaluate_checkpoints(str(run_dir), str(copy), _cfg(), force=True, progress=kill_one)
    assert killed and outcome.evaluated == 4
    [kept] = copy.glob("results.parquet.corrupt-*")
    assert len(kept.read_bytes()) == 100 and len(pq.read_table(table)) == 4
    rows = _by_name(outcome.rows)
    _assert_matches(rows, reference)
    assert rows[CORRUPT]["status"] == "failed"
    assert max(r["attempts"] for r in outcome.rows) == 2
    assert killed[0] not in {r["actor_name"] for r in outcome.rows}


def test_paper_protocol_in_process_and_a_missing_dataset(run_dir, dataset, reference):
    """The evaluator without Ray: the "paper" protocol (test split only, same-split tau, top-1
    predicted maps) matches evaluate_split's, and a missing dataset is a failed report. Its loader
    batch is the whole split (48 images), which a CPU evaluator runs through the model in slices
    (CPU_MODEL_IMAGES, then the rest): the same counts as evaluate_split's batches of 16."""
    from scm_ray.data.loaders import eval_loader
    from scm_ray.evaluate.worker import CPU_MODEL_IMAGES, CheckpointEvaluator
    from scm_ray.inference import evaluate_split

    assert BATCH < CPU_MODEL_IMAGES < 48
    evaluator = CheckpointEvaluator(_cfg("eval.protocol=paper", "report.plots=false", "data.batch_size=48"))
    report = evaluator.evaluate(str(run_dir / GOOD[-1]), str(dataset))
    model = model_from_checkpoint(run_dir / GOOD[-1]).eval()
    _, acc = evaluate_split(model, eval_loader(dataset / "test.beton", BATCH, 1), torch.device("cpu"), 4,
                            protocol="paper", threshold_step=STEP, return_accumulator=True)
    expected = acc.compute("paper").summary("test/")
    assert {k: report.row[k] for k in expected} == expected
    assert "val/gt_known" not in report.row and set(report.files) == {"result.json"}

    missing = evaluator.evaluate(str(run_dir / GOOD[0]), str(dataset / "nowhere"))
    assert missing.row["status"] == "failed" and missing.row["error_kind"] == "data"
    assert "nowhere" in missing.row["error"]


def test_a_checkpoint_that_kills_its_actor_fails_alone(run_dir, reference, tmp_path):
    """One actor: the first checkpoint crashes every actor it is handed to (as an OOM kill or a
    native crash would). It fails after max_retries + 1 actors; a replacement still evaluates
    every checkpoint after it, and a folder without its model.pt fails as "unavailable"."""
    tree = tmp_path / "run"
    for name in GOOD:
        shutil.copytree(run_dir / name, tree / name)
    shutil.copytree(run_dir / GOOD[0], tree / "checkpoint_epoch0000")
    (tree / "checkpoint_epoch0000" / CRASH_MARKER).touch()
    (tree / "checkpoint_epoch0004").mkdir()
    shutil.copy(run_dir / GOOD[0] / "meta.json", tree / "checkpoint_epoch0004")  # model.pt missing

    outcome = evaluate_checkpoints(str(tree), str(tmp_path / "out"), _cfg("ray.num_actors=1", "ray.max_retries=1"))
    rows = _by_name(outcome.rows)
    crashed = rows["checkpoint_epoch0000"]
    assert crashed["status"] == "failed" and crashed["error_kind"] == "actor" and crashed["attempts"] == 2
    assert "each of the 2 actors that evaluated it died (ray.max_retries=1)" in crashed["error"]
    _assert_matches(rows, reference)
    assert len({rows[name]["actor_name"] for name in GOOD}) == 1
    assert all(rows[name]["attempts"] == 1 for name in GOOD)
    missing = rows["checkpoint_epoch0004"]
    assert missing["status"] == "failed" and missing["error_kind"] == "unavailable"
    assert "checkpoint_epoch0004/model.pt: file not found" in missing["error"]
    assert outcome.evaluated == 5 and len(outcome.failed) == 2


def test_actors_that_die_while_starting_are_replaced_up_to_a_cap(local_ray, tmp_path):
    """A broken environment (here: a config the actors' constructor rejects) kills every actor
    as it starts: the pool replaces them max_retries times, then fails the waiting checkpoints
    with the reason, without charging them an attempt."""
    from scm_ray.evaluate.pool import ActorPool, Task

    cfg = _cfg("ray.num_actors=1", "ray.max_retries=2")
    object.__setattr__(cfg.eval, "threshold_step", -1.0)  # invalid past load_config's checks: EvalActor.__init__ raises
    outcomes: dict[str, dict] = {}
    pool = ActorPool(cfg, 1)
    try:
        pool.run([Task(str(tmp_path / f"c{i}"), "", f"c{i}") for i in range(2)],
                 lambda task, report, member: outcomes.update({task.title: {**report.row, "attempts": task.attempts}}))
    finally:
        pool.shutdown()
    assert pool.spawned == 3 and len(pool.startup_deaths) == 3
    assert sorted(outcomes) == ["c0", "c1"]
    for row in outcomes.values():
        assert row["status"] == "failed" and row["error_kind"] == "actor" and row["attempts"] == 0
        assert row["error"].startswith("no evaluation actor left: 3 died while starting")
        assert row["error"].endswith("eval.threshold_step: must be in (0, 0.5], e.g. 0.01 or 0.001; got -1.0")



def test_ctrl_c_keeps_the_rows_written_and_a_rerun_goes_on(run_dir, reference, tmp_path):
    """SIGINT to `scm-ray evaluate` after its first row: one line saying how to continue, exit
    130, no traceback; results.parquet keeps the rows scored so far and the same command
    scores only the rest."""
    from tests.subprocess_env import interrupt_when

    out = tmp_path / "stopped"
    code, output = interrupt_when(
        ["evaluate", "--checkpoints", str(run_dir), "--out", str(out), "--config",
         str(REPO / "jobs/configs/evaluate_synthetic.yaml"), "--num-actors", "1",
         "--set", f"eval.threshold_step={STEP}", "--set", f"data.batch_size={BATCH}"],
        lambda: (out / "results.parquet").is_file(), tmp_path / "evaluate.log", timeout_s=300, poll_s=0.1)
    lines = [line for line in output.splitlines() if "scm-ray evaluate: interrupted; resume with the same command" in line]
    assert code == 130 and len(lines) == 1 and "Traceback" not in output, output[-3000:]
    kept = pq.read_table(out / "results.parquet").to_pylist()
    assert 1 <= len(kept) < len(GOOD) + 1, "interrupted after the first row, before the last"

    again = evaluate_checkpoints(str(run_dir), str(out), _cfg("ray.num_actors=1"))
    assert again.reused == len(kept) and again.evaluated == len(GOOD) + 1 - len(kept)
    _assert_matches(_by_name(again.rows), reference)
