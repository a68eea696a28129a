"""The box benchmark runs end to end at a tiny size (figures printed, timing not judged)."""

from scm_ray.bench.boxes import format_rows, main, realistic_maps, run_benchmark


def test_realistic_maps_are_normalised():
    maps = realistic_maps(3, size=32, seed=1)
    assert all(m.shape == (32, 32) and m.min() == 0.0 and m.max() == 1.0 for m in maps)


def test_bench_runs_tiny(capsys):
    rows = run_benchmark(n_maps=2, size=32, threshold_counts=(10, 20), min_seconds=0.0)
    print(format_rows(rows, 32))
    assert len(rows) == 4 and all(r.identical for r in rows)
    assert main(["--maps", "2", "--size", "24", "--thresholds", "10", "--seconds", "0"]) == 0
    assert "maps/s" in capsys.readouterr().out
