"""Localizing new images with a trained checkpoint: the `Localizer` API and `scm-ray localize`
(plain torch/numpy; no Ray).

Why it exists: everything a user would otherwise copy by hand comes from the checkpoint itself
(model, class names, preprocessing: `InferenceInfo`) and the threshold tau from the
evaluation of that checkpoint when there is one (`evaluation.json` next to it, written by
`scm-ray evaluate`: the tau the protocol chose on the held-out split), else the one its own
validation picked. The map is the SCM-free inference map of the top-1 predicted class
(`WSOLModel.maps` + `class_maps`), resized to the image; boxes come from that map by the
evaluation's rule (`boxes_from_scoremap`), so they are in the image's own pixels.
"""

from __future__ import annotations

import argparse
import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from scm_ray.checkpoint import (
    EVALUATION_FILE,
    CheckpointData,
    CheckpointError,
    InferenceInfo,
    load_checkpoint,
    model_from_checkpoint,
)
from scm_ray.config import ConfigError
from scm_ray.data.images import read_rgb
from scm_ray.metrics import boxes_from_scoremap
from scm_ray.model.wsol import class_maps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class Prediction:
    """One image's localization. `cam` (H, W) float32 in [0, 1] is the predicted class's map at
    the image's size; `boxes` (n, 4) are x0, y0, x1, y1 in the image's pixels (the evaluation's
    convention: x1 = x0 + width, clipped to the last pixel), the largest region first."""

    path: str | None
    class_index: int
    class_name: str
    score: float  # softmax probability of the predicted class
    cam: np.ndarray
    boxes: np.ndarray
    tau: float

    @property
    def box(self) -> np.ndarray:
        """The largest region's box (4,)."""
        return self.boxes[0]


def checkpoint_tau(data: CheckpointData) -> tuple[float, str]:
    """(tau, where it came from): the evaluation's choice when `scm-ray evaluate` scored this
    checkpoint, else the tau its training-time validation picked."""
    note = data.path / EVALUATION_FILE
    if note.is_file():
        try:
            evaluation = json.loads(note.read_text())
            tau = evaluation["test/gt_known_tau"]
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{note}: cannot be read ({type(exc).__name__}: {exc})") from None
        if tau is not None:
            return float(tau), f"evaluation ({evaluation.get('protocol')}, tau from {evaluation.get('tau_source')})"
    for key in ("val/gt_known_tau",):
        if data.metrics.get(key) is not None:
            return float(data.metrics[key]), f"checkpoint ({key})"
    raise CheckpointError(f"{data.path}: records no localization threshold (no {EVALUATION_FILE}, no "
                          "val/gt_known_tau); evaluate it with `scm-ray evaluate`, or give tau")


def as_rgb(image: Any, where: str) -> tuple[np.ndarray, str | None]:
    """(uint8 (H, W, 3) image, its path or None) from a path, a PIL image or a uint8 array."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{where}: image file not found: {path}")
        try:
            return read_rgb(path), str(path)
        except Exception as exc:  # cv2 and Pillow both failed to decode it
            raise ValueError(f"{where}: {path} is not a readable image ({type(exc).__name__}: {exc})") from None
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB")), None
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"{where}: an image array must be uint8 (H, W, 3) or (H, W), got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise ValueError(f"{where}: an image array must be (H, W, 3) or (H, W), got shape {array.shape}")
    return array, None


class Localizer:
    """A checkpoint's model, ready to localize images: `Localizer.from_checkpoint(path).predict([...])`."""

    def __init__(self, model: torch.nn.Module, info: InferenceInfo, tau: float, tau_source: str,
                 device: torch.device | str = "cpu", multi_contour: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.info = info
        self.tau = float(tau)
        self.tau_source = tau_source
        self.multi_contour = multi_contour

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str = "cpu", tau: float | None = None,
                        multi_contour: bool = False) -> "Localizer":
        """The model of a checkpoint folder (or its model.pt), SCM-free. `tau` overrides the
        checkpoint's own (see checkpoint_tau); `multi_contour` returns a box per region."""
        data = load_checkpoint(path)
        chosen, source = (float(tau), "given") if tau is not None else checkpoint_tau(data)
        return cls(model_from_checkpoint(data), data.inference_info, chosen, source, device, multi_contour)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names

    def predict(self, images: Sequence[Any], batch_size: int = 32) -> list[Prediction]:
        """One Prediction per image (file paths, PIL images or uint8 arrays, mixed freely)."""
        return [p for batch in self.predict_batches(images, batch_size) for p in batch]

    def predict_batches(self, images: Sequence[Any], batch_size: int = 32) -> Iterable[list[Prediction]]:
        """Predictions batch by batch (for progress reporting over large folders)."""
        for start in range(0, len(images), batch_size):
            loaded = [as_rgb(im, f"image {start + i}") for i, im in enumerate(images[start:start + batch_size])]
            yield self._predict([im for im, _ in loaded], [p for _, p in loaded])

    @torch.no_grad()
    def _predict(self, images: list[np.ndarray], paths: list[str | None]) -> list[Prediction]:
        x = torch.from_numpy(self.info.preprocess.batch(images)).to(self.device)  # (B, 3, s, s)
        s0, f0 = self.model.maps(x)  # (B, C, h, w), (B, h*w)
        probs = s0.float().mean(dim=(2, 3)).softmax(dim=1)  # (B, C)
        score, top1 = probs.max(dim=1)  # (B,), (B,)
        out = []
        for i, (image, path) in enumerate(zip(images, paths)):
            height, width = image.shape[:2]
            cam = class_maps(s0[i:i + 1], f0[i:i + 1], top1[i:i + 1, None], size=(height, width))
            cam = cam[0, 0].cpu().numpy()  # (H, W)
            out.append(Prediction(path, int(top1[i]), self.class_names[int(top1[i])], float(score[i]), cam,
                                  self._boxes(cam), self.tau))
        return out

    def _boxes(self, cam: np.ndarray) -> np.ndarray:
        """(n, 4) float boxes at tau, largest area first; one (0, 0, 0, 0) box when no pixel
        passes tau (as the evaluation scores it)."""
        boxes = boxes_from_scoremap(cam, [self.tau], multi_contour=self.multi_contour)[0]  # (n, 4)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[np.argsort(-areas, kind="stable")].astype(np.float64)


# ---------------------------------------------------------------------------------------------
# scm-ray localize
# ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder (with model.pt) or model.pt")
    parser.add_argument("--images", required=True, help="a folder (searched recursively) or a glob pattern")
    parser.add_argument("--out", required=True, help="folder for predictions.parquet (and overlays/)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    parser.add_argument("--tau", type=float, default=None, help="threshold (default: the checkpoint's)")
    parser.add_argument("--multi-contour", action="store_true", help="a box per region, not only the largest")
    parser.add_argument("--overlays", action="store_true", help="also write overlays/<name>.png per image")


def find_images(spec: str) -> list[str]:
    """Image files of a folder (recursively) or of a glob pattern, sorted."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    else:
        files = [Path(p) for p in glob.glob(str(folder), recursive=True)]
        files = [p for p in files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ConfigError("images", f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {spec}")
    return sorted(str(p) for p in files)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size < 1:
        raise ConfigError("batch-size", f"must be >= 1, got {args.batch_size}")
    paths = find_images(args.images)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        localizer = Localizer.from_checkpoint(args.checkpoint, device=device, tau=args.tau,
                                              multi_contour=args.multi_contour)
    except CheckpointError as exc:
        raise ConfigError("checkpoint", str(exc)) from None
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[scm-ray] {len(paths)} image(s), tau {localizer.tau:.3g} from {localizer.tau_source}, "
          f"{len(localizer.class_names)} classes, {device}", flush=True)
    rows = []
    with tqdm(total=len(paths), unit="img", desc="localize", disable=None) as bar:
        for batch in localizer.predict_batches(paths, args.batch_size):
            for p in batch:
                rows.append(_row(p))
                if args.overlays:
                    write_overlay(out / "overlays" / f"{len(rows) - 1:06d}_{Path(p.path).stem}.png", p)
            bar.update(len(batch))
    table = write_predictions(out / PREDICTIONS_FILE, rows)
    print(f"[scm-ray] predictions: {table}" + (f"; overlays: {out / 'overlays'}" if args.overlays else ""))
    return 0


def _row(p: Prediction) -> dict:
    height, width = p.cam.shape
    return {"path": p.path, "class": p.class_index, "name": p.class_name, "score": p.score,
            "boxes": p.boxes.tolist(), "tau": p.tau, "width": width, "height": height}


def write_predictions(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("path", pa.string()), ("class", pa.int64()), ("name", pa.string()),
                        ("score", pa.float64()), ("boxes", pa.list_(pa.list_(pa.float64(), 4))),
                        ("tau", pa.float64()), ("width", pa.int64()), ("height", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def write_overlay(path: Path, p: Prediction) -> None:
    """The image with its CAM (jet, 45 %) and its box(es) in red, labelled with the class."""
    import cv2

    image = read_rgb(Path(p.path))
    heat = cv2.applyColorMap((p.cam * 255).astype(np.uint8), cv2.COLORMAP_JET)  # BGR
    picture = cv2.addWeighted(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), 0.55, heat, 0.45, 0)
    for x0, y0, x1, y1 in p.boxes.astype(int):
        cv2.rectangle(picture, (x0, y0), (x1, y1), (0, 0, 255), max(1, min(image.shape[:2]) // 100))
    cv2.putText(picture, f"{p.class_name} {p.score:.2f}", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (255, 255, 255), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), picture)
