"""Self-describing checkpoints (plain torch; no Ray).

A checkpoint is a directory (the one Ray Train persists) holding:
- ``model.pt``: format version, resolved config (a plain dict), epoch, global step, metrics, the
  inference weights (backbone + conv head) and, separately, the SCM weights, and what inference
  needs besides the weights (`InferenceInfo`: class names, preprocessing). Everything needed to
  rebuild the model and feed it new images, from this file alone.
- ``train_state.pt``: optimizer and scheduler state, for resuming training.
- ``meta.json``: the same metadata in readable form (no weights).
- ``evaluation.json`` (after `scm-ray evaluate`): the tau its protocol chose, and where the results are.

Files are loaded with ``torch.load(weights_only=True)``: a checkpoint is data, never code.
torch is imported where a file is saved or loaded, so what only needs the file names and the
errors (checkpoint discovery in the `scm-ray evaluate` driver) does not pay for it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scm_ray.config import ConfigError, ModelConfig, SCMConfig, from_dict
from scm_ray.data.preprocess import Preprocess

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
TRAIN_STATE_FILE = "train_state.pt"
META_FILE = "meta.json"
# Written next to model.pt by `scm-ray evaluate`: the tau it chose (read by Localizer).
EVALUATION_FILE = "evaluation.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated or incompatible; the message names the file."""


class CheckpointUnavailable(CheckpointError):
    """The file could not be reached (not found, or an OS error while reading it). Unlike a
    corrupt file this says nothing about the checkpoint itself: the node may not see the path
    or a mount may have hiccupped, so a later attempt can succeed."""


@dataclass(frozen=True)
class InferenceInfo:
    """What a model needs besides its weights to localize new images: the class names its
    outputs stand for and how an image becomes an input (ImageNet statistics, resized to the
    model's input size as evaluation splits are stored)."""

    class_names: tuple[str, ...]
    preprocess: Preprocess

    def to_dict(self) -> dict:
        return {"class_names": list(self.class_names), "preprocess": self.preprocess.to_dict()}


def inference_info(config: dict, class_names: list[str] | None = None) -> InferenceInfo:
    """InferenceInfo for a run's config: class names as given, else from the dataset folder the
    config names (when it is readable here), else "class 0", "class 1", ... (older checkpoints
    and datasets out of reach)."""
    num_classes = int(config.get("model", {}).get("num_classes", 0))
    if class_names is None:
        class_names = _dataset_class_names(str(config.get("data", {}).get("root") or ""))
    if class_names is None or len(class_names) != num_classes:
        class_names = [f"class {i}" for i in range(num_classes)]
    size = int(config.get("model", {}).get("img_size", 224))
    return InferenceInfo(tuple(str(n) for n in class_names), Preprocess(size=size))


def _dataset_class_names(root: str) -> list[str] | None:
    from scm_ray.data.ffcv_io import read_info
    from scm_ray.storage import is_uri

    if not root or is_uri(root):
        return None
    try:
        return list(read_info(root).get("class_names") or []) or None
    except (OSError, ValueError):
        return None


@dataclass
class CheckpointData:
    path: Path
    format_version: int
    config: dict
    epoch: int
    global_step: int
    metrics: dict[str, float]
    model_state: dict[str, torch.Tensor]
    scm_state: dict[str, torch.Tensor] = field(default_factory=dict)
    inference: dict | None = None  # InferenceInfo.to_dict(); None in checkpoints written before it

    @property
    def inference_info(self) -> InferenceInfo:
        """Class names and preprocessing, with the fallback of `inference_info` for older files."""
        if not self.inference:
            return inference_info(self.config)
        return InferenceInfo(tuple(self.inference["class_names"]), Preprocess.from_dict(self.inference["preprocess"]))

    @property
    def model_config(self) -> ModelConfig:
        return from_dict(ModelConfig, self.config.get("model", {}))

    @property
    def scm_config(self) -> SCMConfig:
        return from_dict(SCMConfig, self.config.get("scm", {}))


def _plain(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as plain floats/ints/strings (weights_only-loadable, JSON-writable)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[str(key)] = value
        elif hasattr(value, "item"):
            out[str(key)] = value.item()
    return out


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    config: dict,
    epoch: int,
    global_step: int,
    metrics: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Write a self-describing checkpoint into `directory` (created if needed). `class_names`
    default to the dataset's (see `inference_info`)."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)  # unwrap DDP
    module = getattr(module, "_orig_mod", module)  # unwrap torch.compile
    from scm_ray.model.wsol import split_scm_state

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    model_state, scm_state = split_scm_state(state)
    metrics = _plain(metrics)
    payload = {
        "format_version": FORMAT_VERSION,
        "config": config,
        "epoch": int(epoch),
        "global_step": int(global_step),
        "metrics": metrics,
        "model": model_state,
        "scm": scm_state,
        "inference": inference_info(config, class_names).to_dict(),
    }
    torch.save(payload, directory / MODEL_FILE)
    if optimizer is not None:
        train_state = {"optimizer": optimizer.state_dict(), "epoch": int(epoch),
                       "global_step": int(global_step)}
        if scheduler is not None:
            train_state["scheduler"] = scheduler.state_dict()
        torch.save(train_state, directory / TRAIN_STATE_FILE)
    meta = {k: payload[k] for k in ("format_version", "epoch", "global_step", "metrics", "config", "inference")}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def _torch_load(path: Path) -> Any:
    import torch

    if not path.is_file():
        raise CheckpointUnavailable(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:  # the read failed (I/O error, file gone meanwhile), not the content
        raise CheckpointUnavailable(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # corrupt, truncated, or not a weights-only pickle
        raise CheckpointError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None


def load_checkpoint(path: str | Path) -> CheckpointData:
    """Read ``model.pt`` of a checkpoint directory (or the file itself) and check its format."""
    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    payload = _torch_load(file)
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"{file}: not an scm-ray checkpoint (no format_version)")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{file}: format version {version} is not supported (this scm-ray reads {FORMAT_VERSION})"
        )
    missing = [k for k in ("config", "model", "epoch") if k not in payload]
    if missing:
        raise CheckpointError(f"{file}: missing {', '.join(missing)}")
    return CheckpointData(
        path=file.parent,
        format_version=version,
        config=payload["config"],
        epoch=int(payload["epoch"]),
        global_step=int(payload.get("global_step", 0)),
        metrics=dict(payload.get("metrics", {})),
        model_state=payload["model"],
        scm_state=payload.get("scm", {}),
        inference=payload.get("inference"),
    )


def load_train_state(path: str | Path) -> dict:
    """Optimizer / scheduler state of a checkpoint directory, for resuming."""
    return _torch_load(Path(path) / TRAIN_STATE_FILE)


def model_from_checkpoint(path: str | Path | CheckpointData, with_scm: bool = False):
    """Rebuild the model from the checkpoint alone; SCM-free unless `with_scm`.

    Pretrained-weight settings are ignored: the checkpoint's own weights are loaded.
    """
    from scm_ray.model import build_model  # local import: keeps this module light
    from scm_ray.model.wsol import join_scm_state

    data = path if isinstance(path, CheckpointData) else load_checkpoint(path)
    try:
        model_cfg = data.model_config
        scm_cfg = data.scm_config if with_scm else None
    except ConfigError as exc:
        raise CheckpointError(f"{data.path}: config is not valid for this scm-ray: {exc}") from None
    model = build_model(dataclasses.replace(model_cfg, pretrained=""), scm_cfg)
    try:
        state = join_scm_state(data.model_state, data.scm_state if with_scm and model.scm is not None else {})
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{data.path}: weights do not match the config: {exc}") from None
    return model
