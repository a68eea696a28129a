"""`--out` of `prepare` must be a folder or absent: an existing file is refused (exit 2, naming
it) and left as it was, before any work starts (evaluate's: tests/evaluate)."""

from __future__ import annotations

import pytest

from scm_ray.cli import main
from scm_ray.paths import output_folder


def test_prepare_out_that_is_a_file_is_refused(tmp_path, capsys):
    out = tmp_path / "results"
    out.write_text("keep me\n")
    code = main(["prepare", "synthetic", "--num-train", "8", "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "out" in err and str(out) in err and "not a folder" in err and "Traceback" not in err
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


def test_output_folder_is_created_and_checked(tmp_path):
    made = output_folder("out", tmp_path / "a" / "b")
    assert made.is_dir() and list(made.iterdir()) == []  # the write probe leaves nothing behind
    (tmp_path / "f").write_text("")
    with pytest.raises(Exception, match="f is a file"):
        output_folder("out", tmp_path / "f" / "deeper")


def test_tables_are_replaced_atomically(tmp_path, monkeypatch):
    """A write that dies halfway leaves the previous table whole (metrics.parquet,
    results.parquet and trials.parquet all go through write_parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from scm_ray.train import history

    history.write_parquet(str(tmp_path), "t.parquet", pa.table({"a": [1, 2]}))
    real = pq.write_table

    def dies_halfway(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1")
        raise OSError("disk full")

    monkeypatch.setattr(history.pq, "write_table", dies_halfway)
    with pytest.raises(OSError):
        history.write_parquet(str(tmp_path), "t.parquet", pa.table({"a": [3]}))
    monkeypatch.setattr(history.pq, "write_table", real)
    assert pq.read_table(tmp_path / "t.parquet").to_pydict() == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # the half-written temp is gone
