"""What rank 0 records besides metrics.parquet: TensorBoard scalars in the run folder (always,
no service needed), MLflow runs (`train.tracking: [tensorboard, mlflow]`), and curves.png.
Plain Python; the engine calls it for every launcher (Ray Train, in-process, Tune trials)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from scm_ray.config import TrainJobConfig, flatten, to_dict
from scm_ray.storage import filesystem, is_uri

# Per-step scalars go to this subfolder of the run folder: a TensorBoard run of its own, since
# their x-axis is the optimizer step while the run folder's own scalars are per epoch.
STEPS_DIR = "steps"
CURVES_FILE = "curves.png"
# Validation curves drawn in curves.png, each with its own line style.
CURVE_METRICS = (("val/gt_known", "GT-Known", "-"), ("val/top1_loc", "Top-1 Loc", "--"),
                 ("val/maxboxacc_v2", "MaxBoxAccV2", ":"))


def mlflow_uri(cfg: TrainJobConfig, storage: str) -> str:
    """train.mlflow_uri, or a SQLite store in the storage folder (no server needed; for a URI
    storage, in ~/.cache/scm-ray: SQLite needs a local file)."""
    if cfg.train.mlflow_uri:
        return cfg.train.mlflow_uri
    folder = Path.home() / ".cache" / "scm-ray" if is_uri(storage) else Path(storage).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder}/mlflow.db"


class Tracker:
    """Rank 0's TensorBoard writer and MLflow run for one training run."""

    def __init__(self, cfg: TrainJobConfig, run_dir: str):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.metric = cfg.ray.checkpoint_metric
        self.mode = cfg.ray.checkpoint_mode
        local = run_dir if not is_uri(run_dir) else str(Path.home() / ".cache" / "scm-ray" / "tensorboard")
        self.writer = SummaryWriter(log_dir=local)  # `tensorboard --logdir <storage>` lists runs by name
        self.steps = SummaryWriter(log_dir=f"{local}/{STEPS_DIR}")
        self.mlflow = None
        if "mlflow" in cfg.train.tracking:
            self.mlflow = _start_mlflow(cfg, run_dir)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        self.steps.add_scalar("step/train_loss", loss, global_step)
        self.steps.add_scalar("step/lr", lr, global_step)

    def epoch(self, history: list[dict]) -> None:
        """The newest epoch's scalars, and curves.png redrawn from every epoch so far."""
        row = history[-1]
        numbers = {k: float(v) for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, int(row["epoch"]))
        self.writer.flush()
        self.steps.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(numbers, step=int(row["epoch"]))
        fs, path = filesystem(self.run_dir)
        with fs.open_output_stream(f"{path}/{CURVES_FILE}") as out:
            out.write(curves_png(history, self.metric, self.mode))

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()
        self.steps.close()
        if self.mlflow is not None:
            self.mlflow.end_run(status=status)


def create_mlflow_experiment(uri: str, name: str) -> None:
    """Create the store and the experiment once, up front: a search's trials would otherwise
    race to create both in one SQLite file."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(name)


def _start_mlflow(cfg: TrainJobConfig, run_dir: str):
    """An MLflow run named after the run folder (experiment: train.mlflow_experiment, else the
    storage folder's name), its params the resolved config, flattened; a resumed run continues
    the same MLflow run."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines on every new experiment
    storage, name = run_dir.rstrip("/").rsplit("/", 1)
    mlflow.set_tracking_uri(mlflow_uri(cfg, storage))
    mlflow.set_experiment(cfg.train.mlflow_experiment or Path(storage).name or "scm-ray")
    found = mlflow.search_runs(filter_string=f"tags.mlflow.runName = '{name}'", output_format="list")
    if found:
        mlflow.start_run(run_id=found[0].info.run_id)
    else:
        mlflow.start_run(run_name=name, tags={"run_dir": run_dir})
        params = {k: str(v)[:500] for k, v in flatten(to_dict(cfg)).items()}
        mlflow.log_params(params)
    return mlflow


def curves_png(history: list[dict], metric: str, mode: str) -> bytes:
    """Loss, lr and the validation localization metrics per epoch; the best epoch by `metric`
    marked on every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [row.get("train/loss", math.nan) for row in history], "-o", color="black")
    axes[0].set_title("train loss")
    axes[1].plot(epochs, [row.get("lr", math.nan) for row in history], "-o", color="tab:purple")
    axes[1].set_yscale("log")
    axes[1].set_title("learning rate")
    for key, label, style in CURVE_METRICS:
        axes[2].plot(epochs, [row.get(key, math.nan) for row in history], style, marker="o", label=label)
    axes[2].set_title("validation (%)")
    scored = [(row.get(metric), row["epoch"]) for row in history if isinstance(row.get(metric), (int, float))]
    if scored:
        best = (max if mode == "max" else min)(scored)[1]
        for ax in axes:
            ax.axvline(best, color="0.45", linestyle="-.", linewidth=1,
                       label=f"best epoch {best} ({metric})" if ax is axes[2] else None)
    axes[2].legend(loc="best", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
