"""scm-ray: distributed WSOL (DeiT + Spatial Calibration Module) on Ray."""

__version__ = "0.1.0"
__all__ = ["Localizer"]


def __getattr__(name: str):
    """`from scm_ray import Localizer` without importing torch for every `scm-ray` command."""
    if name == "Localizer":
        from scm_ray.localize import Localizer

        return Localizer
    raise AttributeError(f"module 'scm_ray' has no attribute {name!r}")
