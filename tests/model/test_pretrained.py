"""model.pretrained: "hub" fails fast and by name when the hub is out of reach, is served from the
Hugging Face cache without the network, and a local file loads through timm or is refused naming
the keys that do not fit. Real timm models, real files, a real (closed) socket."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from scm_ray.config import ConfigError
from scm_ray.model.build import build_backbone

TINY = dict(embed_dim=48, depth=3, num_heads=3)


def _tiny_source(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10,
                             **{**TINY, **overrides})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connections are refused


def _hub_env(tmp_path: Path, **extra) -> dict:
    return {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}", "HF_HOME": str(tmp_path / "hf"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]), **extra}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_file_loads_through_timm(tmp_path, suffix):
    source = _tiny_source()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pth":
        torch.save({"model": source.state_dict()}, path)
    else:
        save_file(source.state_dict(), str(path))
    model = build_backbone("vit_tiny_patch16_224", 64, 8, 0.0, **TINY, pretrained=str(path))
    assert torch.equal(model.blocks[2].mlp.fc1.weight, source.blocks[2].mlp.fc1.weight)
    assert model.pos_embed.shape == (1, 65, 48)  # resampled from the 4x4 grid to 8x8 by timm


@pytest.mark.parametrize("depth, words, key", [(4, "missing from the file", "blocks.3.attn.qkv.weight"),
                                               (2, "not in the model", "blocks.2.attn.qkv.weight")])
def test_mismatched_file_names_the_keys(tmp_path, depth, words, key):
    path = tmp_path / "weights.pth"
    torch.save(_tiny_source().state_dict(), path)  # depth 3
    with pytest.raises(ConfigError, match=f"model.pretrained: .*{words}: .*{key}"):
        build_backbone("vit_tiny_patch16_224", 64, 8, 0.0, embed_dim=48, depth=depth, num_heads=3,
                       pretrained=str(path))


def test_mismatched_width_names_the_shapes(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(_tiny_source().state_dict(), str(path))
    with pytest.raises(ConfigError, match=r"shape \(file vs model\): cls_token \[1, 1, 48\] vs \[1, 1, 96\]"):
        build_backbone("vit_tiny_patch16_224", 64, 8, 0.0, embed_dim=96, depth=3, num_heads=3,
                       pretrained=str(path))


def test_unreachable_hub_fails_fast_naming_the_field(tmp_path):
    """The driver's check, through the CLI: before Ray starts, within 15 s, one paragraph naming
    model.pretrained, the model, the local-file alternative and HF_HUB_OFFLINE; no traceback."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "scm_ray.cli", "train", "--config", "jobs/configs/train_cub.yaml",
         "--set", f"ray.storage_path={tmp_path / 'runs'}", "--set", "model.pretrained=hub"],
        env=_hub_env(tmp_path), capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2])
    seconds = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert seconds < 30, f"took {seconds:.1f} s"  # mostly importing torch on a loaded machine
    assert "Traceback" not in out and "Retrying" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    for words in ("model.pretrained", "deit_small_patch16_224", "local weights file", "HF_HUB_OFFLINE"):
        assert words in out, (words, out)
    assert not (tmp_path / "runs").exists()  # nothing started


def test_silent_hub_times_out_within_seconds(tmp_path):
    """A hub that accepts the connection and never answers (a black hole, not a refusal): the
    driver's probe gives up after PROBE_TIMEOUT_S, with no retries."""
    from scm_ray.model.pretrained import PROBE_TIMEOUT_S

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel accepts; nobody reads or replies
        env = _hub_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}")
        code = ("import time; from scm_ray.model.pretrained import fetch_hub_file\n"
                "t = time.monotonic()\n"
                "try:\n    fetch_hub_file('deit_small_patch16_224')\n"
                "except ValueError as e:\n    print(f'{time.monotonic() - t:.2f}'); print(e)\n")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    seconds, message = proc.stdout.split("\n", 1)
    assert float(seconds) < PROBE_TIMEOUT_S + 5, proc.stdout
    assert "model.pretrained" in message and "Timeout" in message, proc.stdout + proc.stderr


def _seed_hub_cache(hf_home: Path, repo: str, filename: str, state: dict) -> None:
    """The Hugging Face cache layout huggingface_hub itself writes (refs/main -> snapshot)."""
    repo_dir = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / filename))


def test_hub_weights_from_the_cache_need_no_network(tmp_path):
    """What a worker does after the driver fetched the weights (or on an offline node with a
    seeded cache): the cached file is loaded, the closed endpoint never asked. Without the file
    and with HF_HUB_OFFLINE set, the error says so."""
    from scm_ray.model.pretrained import hub_source

    repo, filenames = hub_source("vit_tiny_patch16_224")
    source = _tiny_source()
    _seed_hub_cache(tmp_path / "hf", repo, filenames[0], source.state_dict())
    code = ("import torch, sys; from scm_ray.model.build import build_backbone; "
            "m = build_backbone('vit_tiny_patch16_224', 64, 8, 0.0, embed_dim=48, depth=3, num_heads=3, "
            "pretrained='hub'); print(float(m.blocks[0].attn.qkv.weight.sum()))")
    proc = subprocess.run([sys.executable, "-c", code], env=_hub_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split()[-1]) == pytest.approx(float(source.blocks[0].attn.qkv.weight.detach().sum()))

    offline = _hub_env(tmp_path, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty"))
    proc = subprocess.run([sys.executable, "-c", code], env=offline, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "model.pretrained" in proc.stderr and "HF_HUB_OFFLINE is set" in proc.stderr, proc.stderr
