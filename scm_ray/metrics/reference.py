"""The slow, straightforward box extractor: the oracle the fast one is tested and timed against.

One cv2.threshold + cv2.findContours per threshold, exactly the wsolevaluation recipe (see
boxes.py for the convention). Do not use it for evaluation; it exists so that the exhaustive
agreement test and the benchmark compare against one shared, obviously-correct version.
"""

from __future__ import annotations

import cv2
import numpy as np

from scm_ray.metrics.boxes import check_thresholds, to_uint8


def reference_boxes(scoremap: np.ndarray, thresholds, multi_contour: bool = False) -> list[np.ndarray]:
    """Per threshold, (k, 4) boxes from one findContours call each (k = 1 unless multi_contour)."""
    thresholds = check_thresholds(thresholds)
    u8, _ = to_uint8(scoremap)
    height, width = u8.shape
    peak = u8.max()  # np.uint8, so tau * peak is computed in the reference's types
    result = []
    for tau in thresholds:
        _, mask = cv2.threshold(u8, int(tau * peak), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            result.append(np.zeros((1, 4), np.int64))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        rows = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            rows.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        result.append(np.array(rows, np.int64))
    return result
