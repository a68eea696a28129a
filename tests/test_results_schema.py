"""The README's table of result-file columns is the schema module's, and the schema catches what
it must: unknown columns and integer counts stored as doubles. Real files are checked against it
where the tests write them (tests/train/test_train.py, tests/evaluate/test_pool.py,
tests/tune/test_search.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from scm_ray.metrics import MetricSet
from scm_ray.metrics.metric_set import TEST, VAL
from scm_ray.results_schema import check_columns, markdown, match

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_column_of_every_results_file():
    assert markdown() in README.read_text(), "README's 'Result files' table differs from scm_ray/results_schema.py"


def test_every_metric_column_is_described():
    metrics = MetricSet.for_dataset("paper", (0.3, 0.5, 0.7), 200)
    for file, prefixes in (("metrics.parquet", [VAL]), ("results.parquet", [TEST, VAL])):
        for prefix in prefixes:
            for column in metrics.columns(prefix):
                assert match(file, column) is not None, (file, column)
    assert match("metrics.parquet", "scm/lambda_3").name == "scm/lambda_<i>"
    assert match("results.parquet", "optim.lr").name == "<section>.<field>"


def test_unknown_columns_and_wrong_kinds_are_reported():
    good = pa.schema([("epoch", pa.int64()), ("val/num_images", pa.int64()), ("val/gt_known", pa.float64()),
                      ("val/maxboxacc_v2_iou50_tau", pa.float64())])
    assert check_columns("metrics.parquet", good) == []
    bad = pa.schema([("val/n_images", pa.int64()), ("val/num_images", pa.float64()), ("top5_loc", pa.float64())])
    problems = check_columns("metrics.parquet", bad)
    assert len(problems) == 3 and "'val/num_images' is double" in problems[1]
    trials = pa.schema([("final/global_step", pa.float64()), ("final/train/loss", pa.float64()),
                        ("config/optim.lr", pa.float64())])
    assert check_columns("trials.parquet", trials) == [
        "trials.parquet: column 'final/global_step' is double, the table says int"]
