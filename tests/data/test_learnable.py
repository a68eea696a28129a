"""The synthetic set is learnable for localization from random weights on CPU in seconds: the
property the demo depends on (an early naive set reached only ~41 % GT-Known).

A tiny ViT (64 px, 8 px patches, width 96, depth 4) trained without the SCM through the real
FFCV loaders, with an auxiliary CLS-token classifier: the published method starts from a DeiT
whose CLS attention was trained by exactly such a head, and the map's F0 factor is that
attention. Without it, F0 is never trained without the SCM and GT-Known from random init varies
with the seed (48-94 % in probes here); with it, 97-99 % after two epochs. GT-Known =
largest-contour box of the GT-class map at the best of 20 thresholds has IoU >= 0.5 with the
box (+1 pixel convention), computed here so this test depends only on the data pipeline and
the model.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scm_ray.config import ModelConfig
from scm_ray.data.loaders import eval_loader, train_loader
from scm_ray.data.prepare import prepare_synthetic

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def _box(cam: np.ndarray, tau: float) -> tuple[int, int, int, int]:
    u8 = (cam * 255).astype(np.uint8)  # (H, W)
    _, mask = cv2.threshold(u8, int(tau * u8.max()), 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0, 0, 0, 0
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return x, y, min(x + w, cam.shape[1] - 1), min(y + h, cam.shape[0] - 1)


def _iou(a, b) -> float:
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]) + 1, min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)  # noqa: E731
    return iw * ih / (area(a) + area(b) - iw * ih)


def _forward(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(GAP(S0) logits (B, C), final CLS token (B, D)) of a WSOLModel without SCM."""
    vit = model.backbone
    x = vit.norm(vit.blocks(vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))))  # (B, 1 + N, D)
    tokens = x[:, vit.num_prefix_tokens:]  # (B, N, D)
    h, w = model.grid_size
    s0 = model.head(tokens.transpose(1, 2).reshape(len(x), -1, h, w))  # (B, C, H, W)
    return s0.mean(dim=(2, 3)), x[:, 0]


def test_tiny_vit_localizes_after_two_epochs(tmp_path):
    from scm_ray.model.build import build_model, param_groups

    torch.manual_seed(0)
    data = tmp_path / "syn"
    prepare_synthetic(data, num_train=1600, num_val=0, num_test=200, image_size=64, num_workers=2, progress=False)
    model = build_model(ModelConfig(name="vit_tiny_patch16_224", num_classes=4, img_size=64, patch_size=8,
                                    embed_dim=96, depth=4, num_heads=3, drop_path_rate=0.0))
    cls_head = torch.nn.Linear(96, 4)
    opt = torch.optim.AdamW(param_groups(model, 0.05) + [{"params": cls_head.parameters()}], lr=1e-3)
    train = train_loader(data / "train.beton", 32, 2, 72, 64, seed=0)
    model.train()
    for _ in range(2):
        for images, labels in train:
            logits, cls_token = _forward(model, images)
            loss = F.cross_entropy(logits, labels) + F.cross_entropy(cls_head(cls_token), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    taus = np.arange(0, 1, 0.05)
    hits, correct, total = np.zeros(len(taus)), 0, 0
    for images, labels, boxes, count, _ in eval_loader(data / "test.beton", 100, 2):
        logits, cams = model.localize(images, classes=labels)  # cams (B, 1, 64, 64)
        correct += (logits.argmax(1) == labels).sum().item()
        total += len(labels)
        for cam, b, n in zip(cams[:, 0].numpy(), boxes.numpy(), count.tolist()):
            for k, tau in enumerate(taus):
                hits[k] += max(_iou(_box(cam, tau), g) for g in b[:n]) >= 0.5
    gt_known = hits.max() / total
    assert correct / total >= 0.9
    assert gt_known >= 0.7, f"GT-Known {gt_known:.3f} (best tau {taus[hits.argmax()]:.2f})"
