"""`scm-ray bench step` at a tiny size on CPU: it runs both models, eager and compiled, and ends
with the goal-check line (figures are printed, never asserted: timings on a shared CPU are noise)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from scm_ray.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--device", "cpu", "--batch", "2", "--model", "vit_tiny_patch16_224", "--img-size", "32",
    "--patch-size", "8", "--embed-dim", "24", "--depth", "1", "--num-heads", "2",
    "--num-classes", "3", "--repeats", "2", "--warmup", "1", "--iterations", "6", "2",
]
LAST_LINE = re.compile(
    r"^step ratio scm/plain \d+\.\d\d \(throughput\), \d+\.\d\d \(peak memory\) on cpu \(.+\)$"
)


def _rows(out: str, mode: str) -> dict[str, list[str]]:
    """Table rows of one mode: model name -> [ms, min ms, img/s, peak MiB]."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0] == mode:
            rows[parts[1]] = parts[2:]
    return rows


@pytest.mark.slow  # torch.compile
def test_bench_step_eager_and_compiled(capsys):
    code = main(["bench", "step", *TINY, "--compile", "--backend", "aot_eager", "--dense"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0
    assert LAST_LINE.match(out.strip().splitlines()[-1]), out.strip().splitlines()[-1]
    for mode in ("eager", "compiled"):
        rows = _rows(out, mode)
        assert set(rows) == {"plain", "scm", "scm-dense"}, out
        for figures in rows.values():
            assert all(float(x) > 0 for x in figures)
        assert f"{mode}: scm/plain throughput" in out


def test_benchmark_job_needs_neither_ray_nor_ffcv():
    """jobs/benchmark_step.py runs with Ray and FFCV unimportable (a GPU box without them)."""
    code = (
        "import runpy, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('ray', 'ffcv'):\n"
        "            raise ImportError(name + ' is blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = ['benchmark_step.py'] + {TINY + ['--no-compile', '--threads', '1']!r}\n"
        "runpy.run_path('jobs/benchmark_step.py', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    print(result.stdout)
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert LAST_LINE.match(last), last
    assert set(_rows(result.stdout, "eager")) == {"plain", "scm"}


def test_cpu_defaults_eager_only_with_progress_and_a_quiet_stderr():
    """On CPU the defaults skip torch.compile (minutes on a small CPU), every stage says so as it
    starts, and the profiler's native "gpuGetDeviceCount failed" / USDT lines stay off stderr."""
    tiny = TINY[:TINY.index("--repeats")] + ["--iterations", "6", "2"]  # default repeats and warm-up
    result = subprocess.run([sys.executable, "-m", "scm_ray.cli", "bench", "step", *tiny],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _rows(result.stdout, "eager") and not _rows(result.stdout, "compiled"), result.stdout
    for stage in ("eager: building plain and scm", "eager: warm-up scm (1 steps)", "eager: timed repeat 3/3",
                  "eager: peak memory"):
        assert stage in result.stdout, result.stdout
    for noise in ("gpuGetDeviceCount", "ERROR", "USDT", "Traceback"):
        assert noise not in result.stderr + result.stdout, result.stderr
