"""The Ray-free parts of evaluation: finding checkpoints in trees, the reuse rule, the results
table (varying config columns, mixed types), the ranking, and the threaded box counter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from scm_ray.evaluate.discovery import data_root_of, epoch_from_name, find_checkpoints, fingerprint
from scm_ray.evaluate.results import (
    best_row,
    eval_key,
    format_table,
    ranking_column,
    read_results,
    reusable,
    with_varying_config,
    write_results,
)


def _checkpoint(folder: Path, lr: float = 1e-3, data_root: str = "data/x") -> Path:
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    config = {"optim": {"lr": lr}, "data": {"root": data_root}, "scm": {"iterations": [4, 2]}}
    (folder / "meta.json").write_text(json.dumps({"config": config}))
    return folder


def test_a_tune_tree_a_run_folder_and_a_single_checkpoint(tmp_path):
    experiment = tmp_path / "experiment"
    for trial in ("trial_a", "trial_b"):
        run = experiment / trial / "run"
        _checkpoint(run / "checkpoint_epoch0001")
        _checkpoint(run / "checkpoint_epoch0002")
        (run / "metrics.parquet").write_bytes(b"not a checkpoint")
    stray = experiment / "trial_b" / "leftover"
    stray.mkdir()
    (stray / "model.pt").write_bytes(b"\x00garbage")  # counts, and will fail
    hidden = experiment / ".cache" / "checkpoint_x"
    _checkpoint(hidden)
    (experiment / "experiment_state.json").write_text("{}")

    found = find_checkpoints(experiment)
    assert [f.run for f in found] == ["trial_a/run", "trial_a/run", "trial_b", "trial_b/run", "trial_b/run"]
    assert found[0].slug == "trial_a__run__checkpoint_epoch0001"
    assert len({f.slug for f in found}) == len(found)

    run = experiment / "trial_a" / "run"
    assert [f.path.name for f in find_checkpoints(run)] == ["checkpoint_epoch0001", "checkpoint_epoch0002"]
    assert {f.run for f in find_checkpoints(run)} == {"run"}
    single = find_checkpoints(run / "checkpoint_epoch0002")
    assert [(f.run, f.slug) for f in single] == [("run", "run__checkpoint_epoch0002")]
    assert find_checkpoints(run / "checkpoint_epoch0002" / "model.pt") == single
    with pytest.raises(FileNotFoundError):
        find_checkpoints(tmp_path / "missing")


def test_fingerprint_changes_when_model_pt_is_rewritten(tmp_path):
    folder = _checkpoint(tmp_path / "checkpoint_epoch0007", data_root="/data/cub")
    before = fingerprint(folder)
    assert before == fingerprint(folder)
    (folder / "model.pt").write_bytes(b"other weights!")
    os.utime(folder / "model.pt", ns=(1, 1))
    assert fingerprint(folder) != before
    assert epoch_from_name(folder) == 7 and data_root_of(folder) == "/data/cub"
    assert data_root_of(tmp_path) is None


def test_reuse_rule():
    key = eval_key({"eval": {"protocol": "wsol"}, "data_root": "/d"})
    assert key == eval_key({"data_root": "/d", "eval": {"protocol": "wsol"}})
    ok = {"status": "ok", "fingerprint": "1:2", "eval_key": key}
    assert reusable(ok, "1:2", key)
    assert not reusable(ok, "1:3", key)  # model.pt changed
    assert not reusable(ok, "1:2", eval_key({"eval": {"protocol": "paper"}}))  # other settings
    assert reusable({**ok, "status": "failed", "error_kind": "checkpoint"}, "1:2", key)  # would fail again
    assert not reusable({**ok, "status": "failed", "error_kind": "actor"}, "1:2", key)  # may pass now
    # model.pt not found / unreadable on the node that tried it: a mount may be back now
    assert not reusable({**ok, "status": "failed", "error_kind": "unavailable"}, "1:2", key)
    assert not reusable(None, "1:2", key)


def _row(name: str, gt: float | None, heldout: float | None, config: dict | None, status: str = "ok") -> dict:
    return {"checkpoint": f"/runs/r/{name}", "run": "r", "status": status, "protocol": "wsol", "k": 4,
            "tau_source": "held-out", "test/gt_known": gt, "val/gt_known": heldout, "val/topk_loc": heldout,
            "test/top1_loc": gt, "test/topk_loc": gt, "test/top1_cls": 50.0, "test/maxboxacc_v2": gt,
            "test/gt_known_tau": 0.5,
            "error": None if status == "ok" else "model.pt: cannot be read",
            "config_json": json.dumps(config) if config else None}


def test_table_varying_columns_ranking_and_round_trip(tmp_path):
    rows = [
        _row("checkpoint_epoch0001", 70.0, 40.0, {"optim": {"lr": 1e-3}, "scm": {"iterations": [4, 2]}, "x": 1}),
        _row("checkpoint_epoch0002", 60.0, 55.0, {"optim": {"lr": 1e-4}, "scm": {"iterations": [16]}, "x": 1}),
        _row("checkpoint_epoch0003", None, None, None, status="failed"),
    ]
    table = with_varying_config(rows)
    assert table[0]["optim.lr"] == 1e-3 and table[1]["scm.iterations"] == [16]
    assert table[2]["optim.lr"] is None and "x" not in table[0]
    write_results(tmp_path, table)
    back = read_results(tmp_path)
    assert [r["checkpoint"] for r in back] == [r["checkpoint"] for r in rows]
    assert back[1]["scm.iterations"] == "[16]"  # lists are stored as JSON text
    assert pq.read_table(tmp_path / "results.parquet").column_names[:4] == ["checkpoint", "run", "status", "error"]

    # "wsol": ranked by the held-out value, so epoch 2 wins although its test number is lower
    assert ranking_column(rows, "gt_known") == "val/gt_known"
    assert best_row(rows)["checkpoint"].endswith("0002")
    text = format_table(rows)
    lines = text.splitlines()
    assert "r/checkpoint_epoch0002" in lines[1] and "r/checkpoint_epoch0001" in lines[2]
    assert "failed  r/checkpoint_epoch0003: model.pt: cannot be read" in text
    assert lines[-1].startswith("best: /runs/r/checkpoint_epoch0002")
    assert ranking_column(rows, "topk_loc") == "val/topk_loc"

    paper = [{**r, "protocol": "paper", "val/gt_known": None} for r in rows]
    assert ranking_column(paper, "gt_known") == "test/gt_known"
    assert best_row(paper)["checkpoint"].endswith("0001")
    assert format_table([]) == "no checkpoints evaluated"


def test_a_config_field_of_mixed_kinds_is_stored_as_text(tmp_path):
    rows = [_row("a", 1.0, 1.0, {"model": {"pretrained": ""}}), _row("b", 2.0, 2.0, {"model": {"pretrained": 3}})]
    write_results(tmp_path, with_varying_config(rows))
    assert [r["model.pretrained"] for r in read_results(tmp_path)] == ["", "3"]


def test_threaded_box_counter_matches_one_accumulator():
    from scm_ray.evaluate.worker import BoxCounter
    from scm_ray.inference import BatchMaps, make_accumulator, update_accumulator
    from scm_ray.metrics import MetricSet

    rng = np.random.default_rng(0)
    batches = []
    for _ in range(6):
        maps = rng.random((3, 2, 24, 24)).astype(np.float32)
        labels = rng.integers(0, 4, 3)
        topk = np.argsort(rng.random((3, 4)), axis=1)
        boxes = [np.array([[2, 3, 15, 20]], np.float32) for _ in range(3)]
        batches.append(BatchMaps(labels, topk, boxes, maps[:, 0], maps[:, 1]))
    metrics = MetricSet("paper", (0.3, 0.5), 4)  # the top-1 maps are scored too
    single = make_accumulator(0.1, metrics)
    for batch in batches:
        update_accumulator(single, batch)
    counter = BoxCounter(lambda: make_accumulator(0.1, metrics), threads=3)
    for batch in batches:
        counter.add(batch)
    assert np.array_equal(counter.finish().counts_vector(), single.counts_vector())


def test_bad_settings_fail_before_ray(tmp_path, capsys):
    from scm_ray.cli import main

    _checkpoint(tmp_path / "run" / "checkpoint_epoch0001")
    base = ["evaluate", "--checkpoints", str(tmp_path / "run"), "--out", str(tmp_path / "out")]
    assert main([*base, "--set", "ray.nope=1"]) == 2
    assert "ray.nope: unknown key" in capsys.readouterr().err
    assert main([*base, "--data", str(tmp_path / "nowhere")]) == 2
    assert "data.root: dataset folder not found" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoints", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "checkpoints:" in capsys.readouterr().err


def test_out_that_is_a_file_or_holds_a_corrupt_table_is_refused(tmp_path, capsys):
    """Exit 2 naming the file and what to do; the file is left as it was; no Ray."""
    import ray

    from scm_ray.cli import main
    from scm_ray.evaluate.results import read_results

    run = _checkpoint(tmp_path / "run" / "checkpoint_epoch0001").parent
    out = tmp_path / "out"
    out.write_text("keep me\n")
    assert main(["evaluate", "--checkpoints", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"out: {out}: {out} is a file, not a folder" in err and "Traceback" not in err
    assert out.read_text() == "keep me\n"
    out.unlink()
    out.mkdir()
    (out / "results.parquet").write_bytes(b"PAR1 cut short")
    assert main(["evaluate", "--checkpoints", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'results.parquet'} is not a readable results table" in err and "--force" in err
    assert (out / "results.parquet").read_bytes() == b"PAR1 cut short"
    assert not ray.is_initialized()
    assert read_results(out, force=True) == []  # what --force does: kept beside, then rebuilt
    assert [p.read_bytes() for p in out.glob("results.parquet.corrupt-*")] == [b"PAR1 cut short"]
    assert not (out / "results.parquet").exists()


def test_uris_for_checkpoints_and_out_are_refused_before_ray(tmp_path, monkeypatch, capsys):
    """Evaluation reads and writes plain files: `s3://b/x` must not become `<cwd>/s3:/b/x`."""
    import ray

    from scm_ray.cli import main
    from scm_ray.config import ConfigError, EvaluateJobConfig
    from scm_ray.evaluate import evaluate_checkpoints

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.chdir(tmp_path)
    run = _checkpoint(tmp_path / "run" / "checkpoint_epoch0001").parent
    assert main(["evaluate", "--checkpoints", "s3://bucket/runs/r", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "checkpoints: s3://bucket/runs/r is a URI" in err and "aws s3 sync s3://bucket/runs/r" in err
    assert main(["evaluate", "--checkpoints", str(run), "--out", "s3://bucket/eval"]) == 2
    err = capsys.readouterr().err
    assert "out: s3://bucket/eval is a URI" in err and "give that path as --out" in err
    with pytest.raises(ConfigError) as refused:
        evaluate_checkpoints(str(run), "gs://bucket/eval", EvaluateJobConfig())
    assert refused.value.key == "out"
    with pytest.raises(ConfigError) as refused:
        evaluate_checkpoints("file:///tmp/runs/r", str(tmp_path / "out"), EvaluateJobConfig())
    assert refused.value.key == "checkpoints"
    assert not ray.is_initialized()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no s3:/ gs:/ out/ folder made



@pytest.mark.parametrize("module", ["scm_ray.evaluate.discovery", "scm_ray.evaluate.results",
                                    "scm_ray.evaluate.worker", "scm_ray.evaluate"])
def test_the_ray_free_parts_import_without_ray(module):
    import tests.test_no_ray as no_ray  # module access: pytest must not collect its test twice

    assert no_ray.ray_importers([module]) == {}


def test_settings_that_change_numbers_change_the_key(tmp_path):
    """Precision and the dataset itself are part of what a reused row must match."""
    from scm_ray.config import EvaluateJobConfig, load_config
    from scm_ray.evaluate.api import _settings

    (tmp_path / "dataset.json").write_text('{"splits": {}}')
    cpu = load_config(EvaluateJobConfig, None, [])
    gpu = load_config(EvaluateJobConfig, None, ["ray.use_gpu=true"])
    fp32_gpu = load_config(EvaluateJobConfig, None, ["ray.use_gpu=true", "ray.precision=fp32"])
    key = eval_key(_settings(cpu, str(tmp_path)))
    assert eval_key(_settings(gpu, str(tmp_path))) != key  # auto = bf16 on GPUs
    assert eval_key(_settings(fp32_gpu, str(tmp_path))) == key  # fp32 wherever it runs
    (tmp_path / "dataset.json").write_text('{"splits": {"test": {}}}')  # prepared again
    assert eval_key(_settings(cpu, str(tmp_path))) != key


def test_precision_is_resolved_once_and_cached_under_what_ran(tmp_path):
    """One rule (config.resolve_precision) for training, the evaluation actors and the cache
    key; an actor asked for a GPU that finds no CUDA computes in fp32, and its row must be
    stored under an fp32 key, not the bf16 one planned."""
    from scm_ray.config import EvaluateJobConfig, load_config, resolve_precision
    from scm_ray.evaluate.api import _settings, recorded_key
    from scm_ray.evaluate.results import eval_key
    from scm_ray.evaluate.worker import CheckpointEvaluator

    assert [resolve_precision(s, d) for s in ("auto", "fp32", "bf16") for d in ("cuda", "cpu")] == \
        ["bf16", "fp32", "fp32", "fp32", "bf16", "bf16"]
    gpu = load_config(EvaluateJobConfig, None, ["ray.use_gpu=true"])
    planned = _settings(gpu, str(tmp_path))
    assert planned["precision"] == "bf16"
    ran = CheckpointEvaluator(gpu, "cpu").precision  # what the pool builds without CUDA
    assert ran == "fp32"
    base = {"eval_key": eval_key(planned), "precision": "bf16", "data_root": str(tmp_path)}
    stored = recorded_key(gpu, base, ran)
    cpu = load_config(EvaluateJobConfig, None, ["ray.use_gpu=false"])
    assert stored != base["eval_key"] and stored == eval_key(_settings(cpu, str(tmp_path)))
    assert recorded_key(gpu, base, "bf16") == base["eval_key"]
