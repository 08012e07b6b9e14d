"""Turn any picture of a digit into an MNIST-style 28x28 image.

MNIST's own recipe: grey, light ink on a dark background, cropped to the ink, scaled to fit a
20x20 box keeping its aspect ratio, and placed in 28x28 so that its centre of mass is the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

INK_THRESHOLD = 0.25  # of the stretched range: what counts as ink when cropping


def load_grey(path: str | Path) -> np.ndarray:
    """Any image Pillow reads, as float32 grey in [0, 1]; transparency is laid over white."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            img = Image.new("RGBA", rgba.size, "white")
            img.alpha_composite(rgba)
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def to_mnist(grey: np.ndarray) -> torch.Tensor:
    """A grey image in [0, 1], either polarity, to a (28, 28) float tensor in MNIST's style."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # dark ink on a light background: make it light on dark
        grey = 1.0 - grey
        border = 1.0 - border
    background = float(np.median(border))
    ink = np.clip((grey - background) / max(float(grey.max()) - background, 1e-6), 0.0, 1.0)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    if len(rows) == 0:
        raise ValueError("no digit found: the image has no ink that stands out from its background")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]

    h, w = ink.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    box = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    box = np.asarray(box, dtype=np.float32) / 255.0

    # Place the box so that its centre of mass lands on pixel (14, 14), where MNIST's lie (the
    # training images' mean centre of mass is (14.00, 14.01))...
    ys, xs = np.indices(box.shape)
    mass = box.sum()
    top = int(round(14.0 - (ys * box).sum() / mass))
    left = int(round(14.0 - (xs * box).sum() / mass))
    # ...but never push ink off the 28x28 canvas.
    top = min(max(top, 0), 28 - box.shape[0])
    left = min(max(left, 0), 28 - box.shape[1])
    canvas = np.zeros((28, 28), dtype=np.float32)
    canvas[top : top + box.shape[0], left : left + box.shape[1]] = box
    return torch.from_numpy(canvas)
