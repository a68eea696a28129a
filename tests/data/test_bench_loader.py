"""The loader benchmark runs end to end at a tiny size and reports both loaders and the ratio."""

from __future__ import annotations

import pytest

from scm_ray.bench.loader import format_result, run_benchmark

pytestmark = [pytest.mark.slow,  # runs FFCV loaders (numba compiles their pipelines)
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def test_benchmark_tiny(tmp_path, capsys):
    result = run_benchmark(tmp_path / "bench", num_images=48, image_size=40, batch_size=8, num_workers=1,
                           resize_size=40, crop_size=32, epochs=2, progress=False)
    for name in ("ffcv", "torchvision"):
        timing = result[name]
        assert timing["images_per_s"] > 0 and timing["images_per_epoch"] == 48 and timing["epochs"] == 2
    assert result["ratio"] == pytest.approx(result["ffcv"]["images_per_s"] / result["torchvision"]["images_per_s"])
    assert result["beton_short_side"] == 40 and result["beton_write_mode"] == "jpg"
    text = capsys.readouterr().out
    assert "ratio ffcv / torchvision" in text and text.strip().endswith(format_result(result).splitlines()[-1])
    with pytest.raises(ValueError, match="epochs"):
        run_benchmark(tmp_path / "bench", epochs=1)
