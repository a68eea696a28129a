"""Image checks at prepare time: every image is opened (and by default decoded at reduced
scale) so missing, unreadable and truncated files are caught before they reach a .beton, where
they would fail a writer process or a training step."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

# "header": sizes only. "decode": every image decoded whole here (JPEGs at 1/8 scale, strictly).
# "write": as "decode", except that a JPEG's strict decode is left to the .beton writer, which
# decodes it in full anyway (ffcv_io; prepare.write_prepared then skips and reports a failure as
# the check would have): one decode per JPEG instead of two.
Verify = Literal["header", "decode", "write"]


class ImageProblem(Exception):
    """`reason` is "missing_image" or "unreadable_image"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def probe_image(path: Path, verify: Verify = "decode") -> tuple[int, int]:
    """(width, height) of the stored pixel grid.

    "header" reads only the header (fast; catches missing and non-image files). "decode" also
    decodes the whole file at 1/8 scale (JPEG DCT scaling: every byte of the compressed data is
    still decoded, so only a few times slower than the header) and so catches truncated and
    corrupt data too. For JPEGs a decoder warning counts as corrupt: libjpeg fills what is missing
    with grey and only warns (a 16 x 16 file whose header claims 12000 x 8000 would become a grey
    image). EXIF orientation is deliberately not applied: dataset boxes refer to the stored pixel
    grid, and the writer decodes it the same way.
    """
    try:
        if verify == "write":
            head = _read_head(path)
            if head[:2] == _JPEG_MAGIC:
                return _jpeg_header_size(head, path)
        elif verify == "decode":
            data = path.read_bytes()
            if data[:2] == _JPEG_MAGIC:
                return _decode_jpeg_strictly(data)
        with Image.open(path) as im:
            width, height = im.size
            if verify != "header":
                im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                im.load()
    except FileNotFoundError:
        raise ImageProblem("missing_image", f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ImageProblem("missing_image", f"a directory, not an image: {path}") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise ImageProblem("unreadable_image", f"{type(exc).__name__}: {exc}") from None
    if width < 1 or height < 1:
        raise ImageProblem("unreadable_image", f"empty image {width}x{height}")
    return width, height


_JPEG_MAGIC = b"\xff\xd8"


# A JPEG's frame header usually sits in its first few KB (after EXIF and colour profiles).
_HEAD_BYTES = 64 * 1024
_heads = threading.local()  # per thread: one reused buffer for the files' first bytes


def _read_head(path: Path) -> memoryview:
    """The file's first _HEAD_BYTES bytes, read into this thread's buffer (valid until the
    thread's next call). Why not f.read(): a new 64 KB bytes per image, cut to the file's size,
    grew the checking process's memory by ~2.5 KB an image until the check ended (in glibc's
    malloc arenas, not in Python objects; measured on ImageNet-shaped trees: +19 MiB at 8,000
    images, so ~3 GB on a straight line to ImageNet); one buffer per thread keeps it flat."""
    buffer = getattr(_heads, "buffer", None)
    if buffer is None:
        buffer = _heads.buffer = bytearray(_HEAD_BYTES)
    with open(path, "rb", buffering=0) as f:
        size = f.readinto(buffer)
    return memoryview(buffer)[:size]


def _jpeg_header_size(head: bytes | memoryview, path: Path) -> tuple[int, int]:
    """(width, height) from a JPEG's header, parsed by libjpeg-turbo from the file's first
    bytes (`head`), or from the whole file when its header lies further in; nothing is decoded."""
    import simplejpeg

    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(head)
    except ValueError:
        if len(head) < _HEAD_BYTES:
            raise  # the whole file was read
        height, width, _, _ = simplejpeg.decode_jpeg_header(path.read_bytes())
    if width < 1 or height < 1:
        raise ValueError(f"empty image {width}x{height}")
    return width, height


def _decode_jpeg_strictly(data: bytes) -> tuple[int, int]:
    """(width, height) of a JPEG after decoding it at 1/8 scale with libjpeg-turbo's warnings
    raised as errors (simplejpeg's strict mode: ValueError). Luma only, or CMYK as stored:
    every coefficient is still decoded, colour conversion is skipped."""
    import simplejpeg

    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    if width < 1 or height < 1:
        raise ValueError(f"empty image {width}x{height}")
    try:
        simplejpeg.decode_jpeg(data, colorspace="CMYK" if colorspace == "CMYK" else "GRAY",
                               min_width=max(1, width // 8), min_height=max(1, height // 8), strict=True)
    except ValueError as err:
        raise ValueError(f"corrupt or truncated JPEG data, {width}x{height} in its header: {err}") from None
    return width, height


def probe_images(
    paths: Sequence[str | Path],
    verify: Verify = "decode",
    num_workers: int = 4,
    desc: str = "checking images",
    progress: bool = True,
) -> list[tuple[int, int] | ImageProblem]:
    """probe_image over many files with a thread pool (libjpeg-turbo and Pillow release the GIL
    while decoding); one result per path, in order: a size or the ImageProblem. Paths go to the
    threads in chunks: one future per file cost more than reading a JPEG header. Strings are
    made Paths a chunk at a time: a Path per image held for a whole ImageNet is ~0.5 GB."""

    def chunk(part: Sequence[str | Path]) -> list[tuple[int, int] | ImageProblem]:
        out: list[tuple[int, int] | ImageProblem] = []
        for path in part:
            try:
                out.append(probe_image(Path(path), verify))
            except ImageProblem as exc:
                out.append(exc)
        return out

    size = 64
    parts = [paths[i:i + size] for i in range(0, len(paths), size)]
    results: list[tuple[int, int] | ImageProblem] = []
    with ThreadPoolExecutor(max(1, num_workers)) as pool, \
            tqdm(total=len(paths), desc=desc, disable=not progress, unit="img") as bar:
        for done in pool.map(chunk, parts):
            results += done
            bar.update(len(done))
    return results


def read_rgb(path: Path, strict: bool = False) -> np.ndarray:
    """Decode an image to RGB uint8 (H, W, 3) on its stored pixel grid (no EXIF rotation, to
    match probe_image and the dataset boxes). JPEGs (but CMYK ones) are decoded by
    libjpeg-turbo straight to RGB (simplejpeg: the same pixels as OpenCV's decode, without its
    BGR -> RGB copy); `strict` makes a decoder warning (truncated or corrupt data) an error
    instead of grey pixels, as the prepare-time check does."""
    return read_image(path, strict, "RGB")


def read_image(path: Path, strict: bool = False, order: Literal["RGB", "BGR"] = "RGB") -> np.ndarray:
    """read_rgb, with the channels in `order`: "BGR" is what OpenCV's encoders take, so an image
    that is decoded, resized and encoded again (prepare) needs no channel swap at all."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data[:2].tobytes() == _JPEG_MAGIC and (image := _decode_jpeg(data, strict, order)) is not None:
        return image
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is not None:
        return bgr if order == "BGR" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)
    # Formats OpenCV was built without (e.g. GIF) but Pillow reads, as probe_image did.
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))  # (H, W, 3)
    return rgb if order == "RGB" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _decode_jpeg(data: np.ndarray, strict: bool, order: Literal["RGB", "BGR"]) -> np.ndarray | None:
    """(H, W, 3) of a JPEG in `order`, or None for a CMYK one (OpenCV's conversion is kept for
    those) and, unless strict, for data simplejpeg refuses (OpenCV then decodes what it can)."""
    import simplejpeg

    try:
        if simplejpeg.decode_jpeg_header(data)[2] == "CMYK":
            return None
        return simplejpeg.decode_jpeg(data, colorspace=order, strict=strict)  # (H, W, 3)
    except ValueError as err:
        if strict:
            raise ValueError(f"corrupt or truncated JPEG data: {err}") from None
        return None
