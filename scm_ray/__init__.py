"""scm-ray: distributed WSOL (DeiT + Spatial Calibration Module) on Ray."""

__version__ = "0.1.0"
