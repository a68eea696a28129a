"""`scm-ray demo` (`make demo`): the model on a synthetic batch.

Later stages of the project turn this into the whole pipeline (data -> Ray Train -> evaluation).
"""

from __future__ import annotations

import argparse
import time

import torch

from scm_ray.config import ModelConfig, SCMConfig
from scm_ray.model import build_model, param_groups


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=8, help="synthetic batch size")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    model_cfg = ModelConfig(name="vit_tiny_patch16_224", num_classes=4, img_size=64, patch_size=8,
                            embed_dim=96, depth=4, num_heads=3, drop_path_rate=0.0)
    model = build_model(model_cfg, SCMConfig())
    images = torch.randn(args.batch, 3, 64, 64)
    labels = torch.randint(0, 4, (args.batch,))
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3)
    start = time.perf_counter()
    model.train()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    opt.step()
    model.eval()
    logits, cams = model.localize(images, topk=1)
    print(f"model: {model_cfg.name} {model_cfg.img_size}px, grid {model.grid_size}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, "
          f"SCM blocks {len(model.scm.blocks)}")
    print(f"one training step on a synthetic batch of {args.batch}: loss {loss.item():.4f}")
    print(f"SCM-free localize: logits {tuple(logits.shape)}, cams {tuple(cams.shape)}")
    print(f"guards: {model.scm.pop_guard_counts()}; {time.perf_counter() - start:.2f} s")
    return 0
