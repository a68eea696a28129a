"""Pretrained backbone weights: `model.pretrained` is "" (random init), "hub" (timm's weights for
`model.name`, from the Hugging Face hub) or a local .pth/.safetensors file.

Why this shape: the weights are always loaded by timm's own mechanism (`create_model(...,
pretrained_cfg_overlay=dict(file=...))`), which resamples the position embedding and patch
kernel to the configured grid and drops the classifier. "hub" is first turned into a local file
in the Hugging Face cache: the driver does that once, failing within seconds when the hub cannot
be reached (one HEAD request, no retries), and workers find the file in their node's cache. A
worker on a node whose cache lacks it downloads it under huggingface_hub's file lock, so a node
fetches it once however many workers it runs. Plain torch/timm, no Ray.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from scm_ray.config import ConfigError

HUB = "hub"
SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
PROBE_TIMEOUT_S = 5.0  # one HEAD request; the hub answers in well under a second


def _offline_advice(name: str) -> str:
    return (f"Either give a local weights file for {name} (`--set model.pretrained=/path/to/"
            f"weights.safetensors`, a timm or DeiT .pth/.safetensors state dict), or fetch it once "
            f"where the hub is reachable (it lands in the Hugging Face cache, HF_HOME) and run with "
            f"HF_HUB_OFFLINE=1 against that cache, or set model.pretrained to \"\" for random "
            f"initialisation.")


def hub_source(name: str) -> tuple[str, list[str]]:
    """(hub repo id, candidate file names) of timm's default weights for `name`, in timm's order."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise ConfigError("model.pretrained", f"\"hub\": timm lists no hub weights for model "
                                              f"{name!r}. {_offline_advice(name)}")
    filename = getattr(cfg, "hf_hub_filename", None)
    return repo, [filename] if filename else ["model.safetensors", "pytorch_model.bin"]


def cached_hub_file(name: str) -> str | None:
    """The weights of `name` in this machine's Hugging Face cache, or None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    repo, filenames = hub_source(name)
    for filename in filenames:
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return None


def fetch_hub_file(name: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """A local file holding timm's hub weights for `name`: from the cache, else downloaded after
    one HEAD request that fails fast (`timeout` seconds, no retries) when the hub is out of reach."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    cached = cached_hub_file(name)
    if cached:
        return cached
    repo, filenames = hub_source(name)
    where = f"{constants.ENDPOINT}/{repo}"
    if constants.HF_HUB_OFFLINE:
        raise ConfigError("model.pretrained", f"\"hub\": HF_HUB_OFFLINE is set and the weights of model "
                                              f"{name!r} ({repo}) are not in the Hugging Face cache. "
                                              f"{_offline_advice(name)}")
    for filename in filenames:
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename), timeout=timeout)
        except EntryNotFoundError:
            continue  # timm's next candidate file name
        except Exception as exc:  # unreachable, refused, timed out, gated: all end here
            reason = str(exc).splitlines()[0][:200]
            raise ConfigError("model.pretrained", f"\"hub\": cannot reach the weights of model {name!r} "
                                                  f"at {where} ({type(exc).__name__}: {reason}). "
                                                  f"{_offline_advice(name)}") from None
        return hf_hub_download(repo, filename)  # under huggingface_hub's lock: once per node
    raise ConfigError("model.pretrained", f"\"hub\": {where} holds none of {filenames} for model "
                                          f"{name!r}. {_offline_advice(name)}")


def weights_file(pretrained: str, name: str) -> str:
    """The local file `model.pretrained` stands for ("" for random init)."""
    if not pretrained:
        return ""
    if pretrained == HUB:
        return fetch_hub_file(name)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError("model.pretrained", f"weights file not found: {path} (model {name!r}). "
                                              f"Give a .pth/.safetensors file every worker can read, "
                                              f"\"hub\", or \"\" for random initialisation.")
    if path.suffix not in SUFFIXES:
        raise ConfigError("model.pretrained", f"{path}: expected a {'/'.join(SUFFIXES)} weights file, "
                                              f"\"hub\" or \"\"")
    return str(path)


_TORCH_LOAD_ERRORS = {
    "missing": r"Missing key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)",
    "unexpected": r"Unexpected key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)",
}


def describe_mismatch(message: str, limit: int = 6) -> str:
    """torch's load_state_dict error in one line: the keys missing, unexpected or mis-shaped."""
    parts = []
    for kind, pattern in _TORCH_LOAD_ERRORS.items():
        found = re.search(pattern, message)
        if found:
            keys = re.findall(r'"([^"]+)"', found.group(1))
            parts.append(f"{_KEY_WORDS[kind]}: {_listed(keys, limit)}")
    shapes = re.findall(r"size mismatch for ([^:]+): copying a param with shape torch.Size\((\[[^\]]*\])\) "
                        r"from checkpoint, the shape in current model is torch.Size\((\[[^\]]*\])\)", message)
    if shapes:
        parts.append("shape (file vs model): " + _listed([f"{k} {a} vs {b}" for k, a, b in shapes], limit))
    return "; ".join(parts) or message.strip().splitlines()[0][:300]


class _TimmLoadReport(logging.Handler):
    """Collects the keys timm's loader reports as missing or unexpected: it loads non-strictly
    whenever the classifier is dropped (always here), so these lines are the only trace."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.keys: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"(Missing|Unexpected) keys \((.*?)\) ", record.getMessage())
        if found:
            self.keys[found.group(1).lower()] = found.group(2).split(", ")


def create_with_weights(name: str, file: str, pretrained: str, **kwargs):
    """timm.create_model(name, **kwargs) with the weights in `file` loaded by timm itself (its
    filter resamples pos_embed/patch kernel to the configured grid); any key of the model the
    file lacks, or of the file the model lacks, is an error naming them."""
    import timm

    logger = logging.getLogger("timm.models._builder")
    report, level, propagate = _TimmLoadReport(), logger.level, logger.propagate
    logger.addHandler(report)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=file), **kwargs)
    except RuntimeError as exc:
        if "state_dict" not in str(exc):
            raise
        mismatch = describe_mismatch(str(exc))
    else:
        mismatch = "; ".join(f"{_KEY_WORDS[kind]}: {_listed(keys)}" for kind, keys in sorted(report.keys.items()))
    finally:
        logger.removeHandler(report)
        logger.setLevel(level)
        logger.propagate = propagate
    if mismatch:
        source = file if file == pretrained else f"{pretrained!r} ({file})"
        raise ConfigError("model.pretrained", f"{source}: these weights do not fit model {name!r} as "
                                              f"configured ({mismatch}). Give weights of this "
                                              "architecture, or \"\" for random initialisation.")
    return model


_KEY_WORDS = {"missing": "missing from the file", "unexpected": "not in the model"}


def _listed(keys: list[str], limit: int = 6) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
