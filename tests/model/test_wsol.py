"""WSOLModel: F0 semantics, gradient paths, SCM-free inference, builders and guards."""

import dataclasses

import pytest
import timm
import torch

from scm_ray.config import ConfigError, SCMConfig
from scm_ray.model import WSOLModel, build_model, inference_state_dict, minmax, param_groups


def _explicit_cls_rows(vit, images):
    """F0 the slow way: full softmax attention matrices, CLS row, mean over heads and blocks."""
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))
    rows = []
    for blk in vit.blocks:
        attn = blk.attn
        h = blk.norm1(x)
        B, T, _ = h.shape
        qkv = attn.qkv(h).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, _ = qkv.unbind(0)
        full = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)  # (B, h, T, T)
        rows.append(full[:, :, 0, vit.num_prefix_tokens:].mean(1))
        x = blk(x)  # timm's own block forward
    return minmax(torch.stack(rows).mean(0)), vit.norm(x)


def test_f0_is_cls_row_of_explicit_attention(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, SCMConfig()).eval()
    images = torch.randn(3, 3, 64, 64)
    s0, f0 = model.maps(images)
    f0_ref, tokens = _explicit_cls_rows(model.backbone, images)
    assert f0.shape == (3, 64)
    assert torch.allclose(f0, f0_ref, atol=1e-5)
    assert f0.min() == 0 and torch.allclose(f0.amax(1), torch.ones(3))
    # S0 = conv head over timm's own final patch tokens
    patch = tokens[:, 1:].transpose(1, 2).reshape(3, -1, 8, 8)
    assert torch.allclose(s0, model.head(patch), atol=1e-5)
    assert s0.shape == (3, tiny_model_cfg.num_classes, 8, 8)


def test_grid_follows_image_and_patch_size(tiny_model_cfg):
    cfg = dataclasses.replace(tiny_model_cfg, img_size=48, patch_size=16)
    model = build_model(cfg, SCMConfig(num_blocks=1, iterations=[2]))
    s0, f0 = model.maps(torch.randn(2, 3, 48, 48))
    assert model.grid_size == (3, 3) and s0.shape[-2:] == (3, 3) and f0.shape == (2, 9)
    model.train()
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, cfg.num_classes)


def test_gradients_reach_attention_through_f0_and_scm_scalars(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, SCMConfig(num_blocks=2, iterations=[4, 4])).train()
    s0, f0 = model.maps(torch.randn(2, 3, 64, 64))
    s, _ = model.scm(s0.detach(), f0)  # S0 detached: the only path to qkv is F0
    torch.nn.functional.cross_entropy(s.mean((2, 3)), torch.tensor([0, 1])).backward()
    for blk in model.backbone.blocks:
        assert blk.attn.qkv.weight.grad is not None
        assert blk.attn.qkv.weight.grad.abs().sum() > 0
    for block in model.scm.blocks:
        assert block.lam.grad.abs().item() > 0 and block.beta.grad.abs().item() > 0


def test_training_uses_scm_and_eval_does_not(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, SCMConfig(num_blocks=2, iterations=[4, 4]))
    images = torch.randn(2, 3, 64, 64)
    model.train()
    train_logits = model(images)
    s0, _ = model.maps(images)
    assert not torch.allclose(train_logits, s0.mean((2, 3)))
    model.scm_enabled = False  # warm-up phase: no SCM
    assert torch.allclose(model(images), s0.mean((2, 3)))

    # eval and localize never touch the SCM: poisoned SCM weights change nothing
    model.scm_enabled = True
    model.eval()
    before = model(images), *model.localize(images, topk=2)
    with torch.no_grad():
        for block in model.scm.blocks:
            block.lam.fill_(float("nan"))
    after = model(images), *model.localize(images, topk=2)
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    calls = []
    model.scm.register_forward_hook(lambda *a: calls.append(1))
    model(images), model.localize(images)
    assert calls == []


def test_localize_maps(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, None).eval()
    images = torch.randn(2, 3, 64, 64)
    logits, cams = model.localize(images, topk=3)
    assert cams.shape == (2, 3, 64, 64)
    assert torch.allclose(cams.amin((2, 3)), torch.zeros(2, 3))
    assert torch.allclose(cams.amax((2, 3)), torch.ones(2, 3))
    # the first predicted map equals the map asked for explicitly by class
    top1 = logits.argmax(1)
    _, cams_gt = model.localize(images, classes=top1, size=(32, 40))
    _, cams_full = model.localize(images, classes=top1)
    assert torch.allclose(cams_full[:, 0], cams[:, 0])
    assert cams_gt.shape == (2, 1, 32, 40)
    # known answer: minmax(F0) * S0_c, upsampled and min-max normalised
    s0, f0 = model.maps(images)
    raw = f0.view(2, 1, 8, 8) * s0[torch.arange(2), top1][:, None]
    up = torch.nn.functional.interpolate(raw, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(cams_full, minmax(up.flatten(2)).view_as(up), atol=1e-6)


def test_models_without_cls_token_are_refused():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, class_token=False,
                            global_pool="avg", num_classes=0)
    with pytest.raises(TypeError, match="CLS token"):
        WSOLModel(vit, 3)
    cnn = timm.create_model("resnet18", num_classes=0)
    with pytest.raises(TypeError, match="resnet18.*VisionTransformer"):
        WSOLModel(cnn, 3)


def test_param_groups_follow_reference(tiny_model_cfg):
    model = build_model(tiny_model_cfg, SCMConfig(num_blocks=2, iterations=[4, 4]))
    decay, no_decay = param_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    named = dict(model.named_parameters())
    for name in ["backbone.pos_embed", "backbone.cls_token", "head.bias", "scm.blocks.0.lam",
                 "scm.blocks.1.beta", "backbone.blocks.0.norm1.weight", "backbone.blocks.0.attn.qkv.bias"]:
        assert id(named[name]) in ids, name
    for name in ["head.weight", "backbone.blocks.0.attn.qkv.weight", "backbone.patch_embed.proj.weight"]:
        assert id(named[name]) not in ids, name
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_pretrained_from_local_file_with_resized_grid(tiny_model_cfg, tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48,
                               depth=3, num_heads=3, num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save({"model": source.state_dict()}, path)
    cfg = dataclasses.replace(tiny_model_cfg, pretrained=str(path))  # 64 px: 8x8 grid vs 4x4
    model = build_model(cfg, None)
    assert torch.equal(model.backbone.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    assert model.backbone.pos_embed.shape == (1, 65, 48)
    with pytest.raises(ConfigError, match="model.pretrained: weights file not found"):
        build_model(dataclasses.replace(tiny_model_cfg, pretrained=str(tmp_path / "nope.pth")))


def test_inference_state_dict_drops_scm(tiny_model_cfg):
    model = build_model(tiny_model_cfg, SCMConfig(num_blocks=2, iterations=[4, 4]))
    state = inference_state_dict(model)
    assert not any(k.startswith("scm.") for k in state)
    plain = build_model(tiny_model_cfg, None)
    plain.load_state_dict(state)  # strict: loadable without the SCM


def test_unknown_model_name_is_a_clear_error(tiny_model_cfg):
    with pytest.raises(ValueError, match="model.name.*no_such_vit"):
        build_model(dataclasses.replace(tiny_model_cfg, name="no_such_vit"))


def test_steps_without_the_scm_skip_the_cls_rows(tiny_model_cfg, monkeypatch):
    """Training without the SCM and logits-only evaluation run timm's own blocks (no CLS-row work) and
    give the logits of S0; only an SCM training step computes F0."""
    import scm_ray.model.wsol as wsol

    torch.manual_seed(0)
    model = build_model(tiny_model_cfg, SCMConfig(num_blocks=2, iterations=[4]))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s0, _ = model.eval().maps(images)
    calls = []
    real = wsol.block_with_cls_row
    monkeypatch.setattr(wsol, "block_with_cls_row", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), s0.mean((2, 3)), atol=1e-5)
        model.train().scm_enabled = False
        assert torch.allclose(model(images), s0.mean((2, 3)), atol=1e-5)
        assert calls == []
        model.scm_enabled = True
        model(images)
    assert len(calls) == len(model.backbone.blocks)


def test_scm_weights_split_from_and_join_the_inference_weights():
    from scm_ray.model.wsol import join_scm_state, split_scm_state

    state = {"head.weight": 1, "scm.blocks.0.lam": 2, "backbone.scm.x": 3}
    model, scm = split_scm_state(state)
    assert model == {"head.weight": 1, "backbone.scm.x": 3} and scm == {"blocks.0.lam": 2}
    assert join_scm_state(model, scm) == state
