"""Hyperparameter search on Ray Tune over Ray Train. `space` is Ray-free (config validation
imports it); `search` runs trials; `report` writes the experiment's tables, best config, plot."""
