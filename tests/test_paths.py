"""`--out` of `evaluate` and `prepare` must be a folder or absent: an existing file is refused
(exit 2, naming it) and left as it was, before any work or Ray starts."""

from __future__ import annotations

import pytest

from scm_ray.cli import main
from scm_ray.paths import output_folder


@pytest.mark.parametrize("argv", [["evaluate", "--checkpoints", "{tmp}"],
                                  ["prepare", "synthetic", "--num-train", "8", "--no-progress"]])
def test_out_that_is_a_file_is_refused(tmp_path, capsys, argv):
    out = tmp_path / "results"
    out.write_text("keep me\n")
    code = main([a.format(tmp=tmp_path) for a in argv] + ["--out", str(out)])
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
