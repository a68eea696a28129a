"""`scm-ray demo`: the whole pipeline on a synthetic dataset and a local Ray (cli.py), and its
report against trivial baselines (report.py). Its training recipe ships with the package."""
