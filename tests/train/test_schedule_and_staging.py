"""Pure pieces of training: the lr schedule and dataset staging from a URI."""

import threading

import pytest

from scm_ray.data.staging import DONE_MARKER, stage_dataset
from scm_ray.train.schedule import lr_multiplier


def test_step_schedule_reference_is_constant_until_milestone():
    kw = dict(steps_per_epoch=10, epochs=30, schedule="step", milestones=[30], gamma=0.1)
    assert lr_multiplier(0, **kw) == 1.0 and lr_multiplier(299, **kw) == 1.0
    kw["milestones"] = [2, 4]
    assert [lr_multiplier(s, **kw) for s in (19, 20, 39, 40)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_warmup_then_cosine_to_min_lr():
    kw = dict(steps_per_epoch=10, epochs=5, schedule="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    assert lr_multiplier(0, **kw) == pytest.approx(0.1)
    assert lr_multiplier(9, **kw) == pytest.approx(1.0)
    assert lr_multiplier(10, **kw) == pytest.approx(1.0)
    assert lr_multiplier(30, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(50, **kw) == pytest.approx(0.1)


def test_local_root_is_used_in_place(tmp_path):
    assert stage_dataset(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match="data.root: dataset folder not found"):
        stage_dataset(str(tmp_path / "missing"))


def test_uri_is_staged_once_for_concurrent_workers(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "train.beton").write_bytes(b"x" * 1000)
    (source / "sub" / "records.parquet").write_bytes(b"y" * 10)
    cache = tmp_path / "cache"
    results = []
    threads = [threading.Thread(target=lambda: results.append(stage_dataset(f"file://{source}", cache)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    staged = results[0]
    assert (staged / "train.beton").read_bytes() == b"x" * 1000
    assert (staged / "sub" / "records.parquet").read_bytes() == b"y" * 10
    assert (staged / DONE_MARKER).exists()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        stage_dataset(f"file://{tmp_path}/nope", cache)
