"""Pictures of what a network learned (`nncli plot RUN --filters`, `--activations`): the first
layer's weights as a grid of small images, and the feature maps of one input, layer by layer.

Each grid is one image (`mosaic`): tiles in rows, one pixel of background between them, so a
layer of 256 maps draws as fast as one of 4. matplotlib is imported when a figure is drawn (see
nncli.output.plotting); PNG, SVG or PDF by the file's extension.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nncli.output.plotting import pyplot, save


def grid_shape(count: int, min_columns: int = 1) -> tuple[int, int]:
    """(rows, columns) for `count` tiles: as square as may be, wider than tall, and at least
    `min_columns` wide where there are that many tiles (feature maps: 8, to keep a figure of
    several layers from growing tall)."""
    columns = min(count, max(min_columns, math.ceil(math.sqrt(count))))
    return math.ceil(count / max(columns, 1)), max(columns, 1)


MAP_COLUMNS = 8  # feature maps: at least this many to a row


def scaled(tiles: np.ndarray, per_tile: bool = True, symmetric: bool = False) -> np.ndarray:
    """`tiles` (K, H, W) or (K, H, W, 3) mapped to [0, 1], each tile on its own range (an RGB
    tile on its three channels' range together), or all on one range; a flat tile is 0.5.
    `symmetric`: from -m to m, m the largest magnitude, so that 0 is 0.5 (weights: the sign
    is what makes an edge)."""
    tiles = np.asarray(tiles, dtype=np.float64)
    axes = tuple(range(1, tiles.ndim)) if per_tile else None
    if symmetric:
        high = np.abs(tiles).max(axis=axes, keepdims=per_tile)
        low, span = -high, 2 * high
    else:
        low = tiles.min(axis=axes, keepdims=per_tile)
        span = tiles.max(axis=axes, keepdims=per_tile) - low
    flat = span <= 0
    out = (tiles - low) / np.where(flat, 1.0, span)
    return np.where(flat, 0.5, out)


def enlarged(tiles: np.ndarray, pixels: int = 15) -> np.ndarray:
    """Tiles smaller than `pixels` on a side made about that large, each value a block of
    equal pixels, so that the one-pixel gaps of the grid stay thin beside them."""
    factor = max(1, math.ceil(pixels / max(tiles.shape[1:3])))
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else tiles


def mosaic(tiles: np.ndarray, min_columns: int = 1) -> np.ndarray:
    """Tiles (K, H, W) or (K, H, W, 3), values in [0, 1], laid out in a grid with one pixel
    between them, in rows of at least `min_columns`. Grey tiles give (rows*(H+1)-1,
    cols*(W+1)-1) with NaN between (drawn as the background); RGB tiles give RGBA with the gaps
    transparent."""
    k, h, w = tiles.shape[:3]
    rows, cols = grid_shape(k, min_columns)
    rgb = tiles.ndim == 4
    shape = (rows * (h + 1) - 1, cols * (w + 1) - 1)
    out = np.zeros((*shape, 4)) if rgb else np.full(shape, np.nan)
    for i in range(k):
        r, c = divmod(i, cols)
        window = (slice(r * (h + 1), r * (h + 1) + h), slice(c * (w + 1), c * (w + 1) + w))
        if rgb:
            out[window] = np.concatenate([tiles[i], np.ones((h, w, 1))], axis=-1)
        else:
            out[window] = tiles[i]
    return out


def _show(ax, image: np.ndarray, cmap: str = "gray", gaps: str = "white") -> None:
    plt = pyplot()
    colours = plt.get_cmap(cmap).with_extremes(bad=gaps)
    ax.imshow(image, cmap=None if image.ndim == 3 else colours, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_filters(tiles: np.ndarray, out: Path, title: str, subtitle: str = "") -> Path:
    """The filters in one grid, each on its own scale: (K, H, W) from blue (negative) through
    white (0) to red (positive), or (K, H, W, 3) as RGB from its lowest to its highest value."""
    plt = pyplot()
    rgb = tiles.ndim == 4
    image = mosaic(enlarged(scaled(tiles, symmetric=not rgb)))
    height, width = image.shape[:2]
    side = 7.0
    fig, ax = plt.subplots(figsize=(side, max(2.5, side * height / width + 0.8)))
    _show(ax, image, cmap="RdBu_r", gaps="0.35")  # white is a weight of 0
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize="medium")
    fig.tight_layout()
    return save(fig, out)


def plot_activations(
    picture: np.ndarray, layers: list[tuple[str, np.ndarray]], out: Path, title: str
) -> Path:
    """The input `picture` ((H, W) grey or (H, W, 3) RGB, in [0, 1]) and, for each layer,
    (its label, its maps (C, H, W)) as a grid, all of a layer's maps on one scale (a map that
    stays dark is one the input does not excite)."""
    plt = pyplot()
    panels = [(picture, "input")]
    for label, maps in layers:
        panels.append((mosaic(scaled(maps, per_tile=False), MAP_COLUMNS), label))
    heights = [image.shape[0] / image.shape[1] for image, _ in panels]
    heights[0] = 0.2  # the input is shown small
    width = 7.0
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(h * width + 0.45 for h in heights) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (image, label) in zip(axes[:, 0], panels, strict=True):
        _show(ax, image, cmap="gray" if label == "input" else "viridis")
        ax.set_title(label, fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return save(fig, out)
