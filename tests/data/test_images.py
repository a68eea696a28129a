"""probe_image / probe_images on real files: every verify mode gives the stored pixel grid's size,
also where a JPEG's frame header lies past the first bytes prepare's check reads, and results
stay each image's own when a thread reuses its read buffer."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from scm_ray.data.images import _HEAD_BYTES, ImageProblem, probe_image, probe_images


def _jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return path


def _with_comments(path: Path, total: int) -> Path:
    """The JPEG with `total` bytes of COM segments right after its SOI marker: its frame header
    (SOF) moves that far into the file."""
    data = path.read_bytes()
    segments = b""
    while len(segments) < total:
        body = b"x" * 60000
        segments += b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body
    path.write_bytes(data[:2] + segments + data[2:])
    return path


@pytest.mark.parametrize("verify", ["header", "decode", "write"])
def test_sizes_in_every_mode_small_large_far_header_and_png(tmp_path, verify):
    files = {
        _jpeg(tmp_path / "small.jpg", 37, 21): (37, 21),
        _jpeg(tmp_path / "large.jpg", 900, 700, seed=1): (900, 700),  # several times _HEAD_BYTES
        _with_comments(_jpeg(tmp_path / "far.jpg", 48, 64, seed=2), 2 * _HEAD_BYTES): (48, 64),
    }
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), np.zeros((30, 50, 3), np.uint8))
    files[png] = (50, 30)
    assert (tmp_path / "large.jpg").stat().st_size > _HEAD_BYTES
    for path, size in files.items():
        assert probe_image(path, verify) == size, path.name


def test_thread_pool_results_are_each_images_own(tmp_path):
    """Two threads, each reading into its own reused buffer: 300 images of 300 sizes, in order."""
    sizes = [(16 + i % 37, 16 + i // 37) for i in range(300)]
    paths = [str(_jpeg(tmp_path / f"{i}.jpg", w, h, seed=i)) for i, (w, h) in enumerate(sizes)]
    assert probe_images(paths, "write", num_workers=2, progress=False) == sizes


def test_missing_and_non_image_files_are_problems(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    results = probe_images([str(tmp_path / "gone.jpg"), str(text)], "write", num_workers=2, progress=False)
    assert [type(r) for r in results] == [ImageProblem, ImageProblem]
    assert [r.reason for r in results] == ["missing_image", "unreadable_image"]
    assert "gone.jpg" in str(results[0])
