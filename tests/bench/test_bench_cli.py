"""`scm-ray bench`: one sub-command per benchmark, each module imported only when chosen."""

import subprocess
import sys

from scm_ray.bench.cli import BENCHMARKS
from scm_ray.cli import main


def test_bench_without_a_benchmark_names_them(capsys):
    assert main(["bench"]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in BENCHMARKS)


def test_bench_step_help_imports_no_other_benchmark():
    """Choosing `step` loads neither the loader benchmark (FFCV, Ray) nor box extraction."""
    code = (
        "import sys\n"
        "from scm_ray.cli import main\n"
        "try:\n"
        "    main(['bench', 'step', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n"
        "loaded = {'scm_ray.bench.loader', 'scm_ray.bench.boxes', 'ray', 'ffcv'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
        "assert 'scm_ray.bench.step' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--precision" in result.stdout


def test_bench_adb_times_both_stacks_at_a_tiny_size(capsys):
    assert main(["bench", "adb", "--batch", "2", "--channels", "8", "--grid", "7", "--iterations", "4", "2",
                 "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert sorted(rows) == ["dense", "fast"]
    assert all(float(ms) > 0 and float(saved) > 0 and int(ops) > 0 for ms, saved, ops in rows.values())
    assert lines[-1].startswith("adb: fast stack ") and "x the dense one's speed" in lines[-1]
