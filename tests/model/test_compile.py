"""torch.compile of the SCM model: one graph (no breaks, no host syncs), same numbers as eager."""

import pytest
import torch
import torch.nn.functional as F

from scm_ray.config import ModelConfig, SCMConfig
from scm_ray.model import build_model

TINY = ModelConfig(
    name="vit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8,
    embed_dim=24, depth=1, num_heads=2, drop_path_rate=0.0,
)


def _step(model, forward, images, labels):
    """Loss and gradients of one training step (forward, cross-entropy, backward)."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(forward(images), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _compare(backend):
    torch.manual_seed(0)
    model = build_model(TINY, SCMConfig(num_blocks=2, iterations=[6, 2])).train()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    eager = _step(model, model, images, labels)
    compiled = _step(model, torch.compile(model, fullgraph=True, backend=backend), images, labels)
    assert torch.allclose(eager[0], compiled[0], rtol=1e-4, atol=1e-5)
    assert eager[1].keys() == compiled[1].keys()
    assert any(name.startswith("scm.") for name in eager[1])  # the SCM scalars are trained
    for name, grad in eager[1].items():
        assert torch.allclose(grad, compiled[1][name], rtol=1e-3, atol=1e-5), name
    assert model.scm.pop_guard_counts() == {"alpha_capped": 0, "beta_clamped": 0, "nonfinite": 0}


def test_scm_training_step_traces_as_one_graph():
    """fullgraph=True fails on any graph break; aot_eager also traces the backward."""
    _compare("aot_eager")


@pytest.mark.slow
def test_scm_training_step_compiles_with_inductor():
    """The real compiler (C++ codegen on CPU), one step of a tiny model: about 45 s on 2 cores."""
    _compare("inductor")
