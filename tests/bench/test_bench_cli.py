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
