"""Numba's disk cache for the typed-dict helpers that importing FFCV compiles.

`import ffcv` builds a numba typed Dict at module level (the image modes of
ffcv/fields/rgb_image.py), which compiles numba's own dict helpers: about 2.8 s of one core on
this project's 2-core machine, in every process that imports FFCV (each training worker, each
Tune trial's workers, each evaluation actor). Numba compiles those helpers without its disk
cache; with the cache on (`Dispatcher.enable_caching`, numba's API) every later process loads
them in ~0.1 s. The cache lives where numba puts it: the package's __pycache__ when writable,
else NUMBA_CACHE_DIR or the user's cache folder; numba keys it by its version and the source.

FFCV's own pipeline code cannot be cached this way (its compiled stages hold ctypes pointers
and are generated at run time), so each loader still compiles once per process.
"""

from __future__ import annotations

_enabled = False


def cache_typed_dict() -> None:
    """Turn numba's disk cache on for its typed-dict helpers; call before importing ffcv."""
    global _enabled
    if _enabled:
        return
    from numba.core.dispatcher import Dispatcher
    from numba.typed import typeddict

    for helper in vars(typeddict).values():
        if isinstance(helper, Dispatcher):
            helper.enable_caching()
    _enabled = True
