"""Make folders of digit pictures as users take and draw them, from MNIST test digits, to measure
`nncli predict` on pictures (issue 18): one folder per form, `COUNT` digits each.

    paper        dark ink on noisy off-white paper, 200x200, JPEG quality 85
    transparent  white strokes on transparency: RGBA PNG, RGB white, alpha the stroke, 200x200
    wide         a digit in a wide 300x120 canvas, dark on white or light on dark, PNG
    small        a small digit (about 40 px) off-centre on a 400x400 white page, PNG

Digits are the embedded `mnist_small` test split (1,000 digits quickstart never trains on), drawn
without replacement with a seeded generator. Each file is named `INDEX_LABEL.EXT`; `--score`
reads `nncli predict --json` output for a folder and prints how many are right.

usage (from the repository root, with nncli installed):
    python scripts/make_digit_pictures.py /tmp/digit_pictures --count 50
    nncli predict RUN /tmp/digit_pictures/paper --json > paper.json
    python scripts/make_digit_pictures.py --score paper.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from nncli.data.mnist import load_mnist_small

FORMS = ("paper", "transparent", "wide", "small")
BICUBIC = Image.Resampling.BICUBIC


def _ink(digit: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 28x28 uint8 digit (light on dark) upscaled smoothly: stroke strength 0..1, float."""
    big = Image.fromarray(digit).resize((width, height), BICUBIC)
    return np.asarray(big, dtype=np.float64) / 255.0


def render(form: str, digit: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """One MNIST digit (28, 28) uint8 as a picture of `form`; the image and its file suffix."""
    if form == "paper":
        ink = _ink(digit, 200, 200)
        # off-white paper with grain and a little uneven light, ink that is dark, not black
        paper = 232 + rng.normal(0, 6, (200, 200)) + np.linspace(-8, 8, 200)[None, :]
        gray = paper * (1 - 0.85 * ink)
        rgb = np.stack([gray, gray - 4, gray - 12], axis=2)  # a warm tint
        return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB"), ".jpg"
    if form == "transparent":
        alpha = np.clip(_ink(digit, 200, 200) * 255, 0, 255).astype(np.uint8)
        rgba = np.full((200, 200, 4), 255, np.uint8)
        rgba[..., 3] = alpha
        return Image.fromarray(rgba, "RGBA"), ".png"
    if form == "wide":
        size = int(rng.integers(90, 115))
        ink = _ink(digit, size, size)
        canvas = np.zeros((120, 300))
        top, left = (120 - size) // 2, int(rng.integers(0, 300 - size))
        canvas[top:top + size, left:left + size] = ink
        light_on_dark = rng.random() < 0.5
        gray = canvas * 255 if light_on_dark else 255 - canvas * 255
        return Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8), "L"), ".png"
    if form == "small":
        size = int(rng.integers(36, 46))
        ink = _ink(digit, size, size)
        page = np.full((400, 400), 255.0)
        # anywhere but the middle: a corner quarter of the page, at random
        top = int(rng.integers(10, 150)) + (200 if rng.random() < 0.5 else 0)
        left = int(rng.integers(10, 150)) + (200 if rng.random() < 0.5 else 0)
        page[top:top + size, left:left + size] -= ink * 240
        return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8), "L"), ".png"
    raise ValueError(f"unknown form {form!r}; the forms are {', '.join(FORMS)}")


def make(out: Path, count: int, seed: int = 0, forms=FORMS) -> dict[str, Path]:
    """`count` pictures of each form in `out/FORM/`; the folders by form."""
    data = load_mnist_small(data_dir=out, rng=np.random.default_rng(0))
    rng = np.random.default_rng(seed)
    folders = {}
    for form in forms:
        folder = out / form
        folder.mkdir(parents=True, exist_ok=True)
        for i in rng.choice(len(data.x_test), size=count, replace=False):
            picture, suffix = render(form, data.x_test[i, 0], rng)
            save = {"quality": 85} if suffix == ".jpg" else {}
            picture.save(folder / f"{i:04d}_{data.y_test[i]}{suffix}", **save)
        folders[form] = folder
    return folders


def score(records: list[dict]) -> tuple[int, int]:
    """(right, total) for `nncli predict --json`'s predictions of pictures named INDEX_LABEL."""
    right = sum(Path(r["input"]).stem.split("_")[-1] == r["class"] for r in records)
    return right, len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="the folder to make the form folders in")
    parser.add_argument("--count", type=int, default=50, help="pictures per form [50]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score", type=Path, help="score a `nncli predict --json` output instead")
    args = parser.parse_args()
    if args.score:
        right, total = score(json.loads(args.score.read_text())["predictions"])
        print(f"{right}/{total} right ({100 * right / total:.0f}%)")
        return
    if args.out is None:
        parser.error("give the folder to make, or --score")
    for form, folder in make(args.out, args.count, args.seed).items():
        print(f"{form}: {folder}")


if __name__ == "__main__":
    main()
