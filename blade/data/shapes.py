"""Class-specific vehicle silhouettes for the synthetic benchmark.

Five classes, named and numbered as in COCO (so that a model trained here transfers to the
COCOA-cls vehicle protocol of Bayesian-Amodal: aeroplane, bicycle, bus, car, motorbike). Every
silhouette is non-convex (wheel arches, cabins, fins, see-through bicycle wheels).

A silhouette is a list of parts drawn in order in a unit box (u to the right, v downwards, both
in [0, 1]); each part has a *material* that colours it. Circles are given in units of the
instance height so wheels stay round when the aspect ratio is jittered.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

# Materials (values in the rendered label patch; 0 = outside the object).
BODY, WINDOW, WHEEL, TRIM = 1, 2, 3, 4

# name -> (COCO category id, width/height ratio, parts)
# parts: ("poly", material, [(u, v), ...]) | ("circle", material, (u, v, r)) |
#        ("ring", material, (u, v, r_out, r_in)) | ("bar", material, (u1, v1, u2, v2, thickness))
CLASSES = {
    "bicycle": (2, 1.7, [
        ("ring", WHEEL, (0.20, 0.66, 0.34, 0.22)),
        ("ring", WHEEL, (0.80, 0.66, 0.34, 0.22)),
        ("bar", TRIM, (0.20, 0.66, 0.47, 0.68, 0.10)),
        ("bar", TRIM, (0.20, 0.66, 0.40, 0.22, 0.10)),
        ("bar", TRIM, (0.40, 0.22, 0.47, 0.68, 0.10)),
        ("bar", TRIM, (0.40, 0.22, 0.72, 0.24, 0.10)),
        ("bar", TRIM, (0.47, 0.68, 0.72, 0.24, 0.10)),
        ("bar", TRIM, (0.72, 0.24, 0.80, 0.66, 0.10)),
        ("poly", BODY, [(0.32, 0.10), (0.48, 0.08), (0.47, 0.17), (0.33, 0.17)]),  # saddle
        ("bar", TRIM, (0.72, 0.24, 0.68, 0.02, 0.09)),
        ("poly", BODY, [(0.62, 0.00), (0.80, 0.00), (0.80, 0.07), (0.62, 0.07)]),  # handlebar
    ]),
    "car": (3, 2.3, [
        ("poly", BODY, [(0.00, 0.50), (0.03, 0.38), (0.20, 0.33), (0.30, 0.06), (0.34, 0.00),
                        (0.66, 0.00), (0.72, 0.06), (0.84, 0.33), (0.97, 0.38), (1.00, 0.48),
                        (1.00, 0.80), (0.00, 0.80)]),
        ("poly", WINDOW, [(0.34, 0.08), (0.48, 0.08), (0.48, 0.31), (0.26, 0.31)]),
        ("poly", WINDOW, [(0.52, 0.08), (0.67, 0.08), (0.79, 0.31), (0.52, 0.31)]),
        ("circle", WHEEL, (0.21, 0.79, 0.21)),
        ("circle", WHEEL, (0.79, 0.79, 0.21)),
    ]),
    "motorcycle": (4, 1.6, [
        ("circle", WHEEL, (0.19, 0.70, 0.30)),
        ("circle", WHEEL, (0.81, 0.70, 0.30)),
        ("poly", BODY, [(0.16, 0.60), (0.30, 0.40), (0.44, 0.30), (0.60, 0.30), (0.66, 0.20),
                        (0.76, 0.22), (0.72, 0.36), (0.84, 0.60), (0.68, 0.72), (0.42, 0.76)]),
        ("bar", TRIM, (0.81, 0.70, 0.72, 0.04, 0.10)),
        ("poly", TRIM, [(0.64, 0.00), (0.84, 0.00), (0.84, 0.08), (0.64, 0.08)]),
        ("poly", BODY, [(0.00, 0.36), (0.34, 0.26), (0.40, 0.36), (0.04, 0.44)]),  # seat/tail
    ]),
    "airplane": (5, 2.6, [
        ("poly", BODY, [(0.00, 0.52), (0.05, 0.44), (0.80, 0.42), (0.93, 0.46), (1.00, 0.55),
                        (0.94, 0.64), (0.06, 0.66)]),
        ("poly", BODY, [(0.01, 0.46), (0.05, 0.00), (0.15, 0.00), (0.23, 0.44)]),  # tail fin
        ("poly", TRIM, [(0.38, 0.58), (0.58, 0.58), (0.45, 1.00), (0.34, 1.00)]),  # wing
        ("poly", WINDOW, [(0.30, 0.47), (0.84, 0.47), (0.84, 0.51), (0.30, 0.51)]),
    ]),
    "bus": (6, 3.0, [
        ("poly", BODY, [(0.00, 0.06), (0.02, 0.00), (0.97, 0.00), (1.00, 0.08), (1.00, 0.84),
                        (0.00, 0.84)]),
        *[("poly", WINDOW, [(u, 0.12), (u + 0.15, 0.12), (u + 0.15, 0.44), (u, 0.44)])
          for u in (0.04, 0.22, 0.40, 0.58, 0.76)],
        ("circle", WHEEL, (0.17, 0.82, 0.18)),
        ("circle", WHEEL, (0.81, 0.82, 0.18)),
    ]),
}
CLASS_NAMES = tuple(CLASSES)  # in COCO id order
CATEGORY_IDS = {name: CLASSES[name][0] for name in CLASS_NAMES}


def render_silhouette(name: str, width: int, height: int, flip: bool = False) -> np.ndarray:
    """Draw one instance of class ``name`` into a uint8 [height, width] material patch.

    0 = outside, otherwise the material (BODY, WINDOW, WHEEL, TRIM) of the last part drawn there.
    """
    _, _, parts = CLASSES[name]
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    sx, sy = width - 1, height - 1

    def px(u, v):
        return ((1.0 - u) if flip else u) * sx, v * sy

    for kind, material, geo in parts:
        if kind == "poly":
            draw.polygon([px(u, v) for u, v in geo], fill=material)
        elif kind in ("circle", "ring"):
            u, v, r = geo[:3]
            cx, cy = px(u, v)
            rp = r * sy
            draw.ellipse([cx - rp, cy - rp, cx + rp, cy + rp], fill=material)
            if kind == "ring":
                ri = geo[3] * sy
                draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
        elif kind == "bar":
            (x1, y1), (x2, y2) = px(*geo[0:2]), px(*geo[2:4])
            half = 0.5 * geo[4] * sy
            length = math.hypot(x2 - x1, y2 - y1) or 1.0
            nx, ny = -(y2 - y1) / length * half, (x2 - x1) / length * half
            draw.polygon([(x1 + nx, y1 + ny), (x2 + nx, y2 + ny), (x2 - nx, y2 - ny),
                          (x1 - nx, y1 - ny)], fill=material)
        else:  # pragma: no cover - the table above is fixed
            raise ValueError(f"unknown part kind {kind!r} in class {name!r}")
    return np.asarray(img)
