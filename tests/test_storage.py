"""Storage locations: one rule for URIs vs paths, filesystems and run folders."""

from __future__ import annotations

import re

import pyarrow.fs as pafs

from scm_ray.storage import absolute, filesystem, is_uri, join, run_location


def test_uris_and_paths(tmp_path, monkeypatch):
    assert is_uri("s3://bucket/runs") and is_uri("file:///tmp/x") and not is_uri("/tmp/x")
    monkeypatch.chdir(tmp_path)
    assert absolute("runs") == str(tmp_path / "runs") and absolute("gs://b/r") == "gs://b/r"
    assert join("s3://b/runs/", "a", "b") == "s3://b/runs/a/b" and join("/x", "y") == "/x/y"
    fs, path = filesystem(f"file://{tmp_path}")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path)
    fs, path = filesystem("relative/folder")
    assert isinstance(fs, pafs.LocalFileSystem) and path == "relative/folder"


def test_run_location_names_a_run_or_derives_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_location("runs", "mine", "train") == (str(tmp_path / "runs"), "mine", f"{tmp_path}/runs/mine")
    storage, name, folder = run_location("s3://b/runs", "", "tune_synthetic")
    assert storage == "s3://b/runs" and re.fullmatch(r"tune_synthetic-\d{8}-\d{6}", name)
    assert folder == f"s3://b/runs/{name}"
