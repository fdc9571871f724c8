"""The untried ideas for the MNIST CNN's gap (issue 21), measured on its second convolution.

The second convolution (16 -> 32 channels, 3x3, padding 1, on 14 x 14 maps, a batch of 128) is
more than half of the CNN's training step. Two ideas the issue lists, timed against what
`conv2d` does, in one thread (as training runs a shard):

  winograd   F(2x2, 3x3) forward: each 4x4 input tile's transform by additions on strided
             views, the 16 products (tiles, 16) @ (16, 32) as one batched np.matmul, and the
             output transform by additions, all in buffers made once (its best case: the
             third idea applied); checked against conv2d's output before it is timed.
             It multiplies 2.25x less, but its products have 16 input channels to sum over,
             where im2col's have 144, and its transforms are element-wise passes over arrays
             4x the size of the input and of the output.
  products   those 16 products alone, on transformed tiles made once: what Winograd costs
             before any transform, a floor no arrangement of the transforms goes below.
  im2col     Conv2D.forward in training mode, as the CNN runs it.

and, for the third (buffers kept across steps with `out=`), what it could save at most: the
minor page faults of a whole CNN training step (built from configs/mnist_cnn.yaml on random
images, no data needed). A fresh array that reuses freed memory costs no fault; one that does
not costs one per 4 KiB page it touches.

Rounds alternate the programs compared; the report gives medians over rounds of each round's
fastest-of-repeats, and the ratios to im2col.

    python bench/bench_conv_ideas.py [--rounds 5] [--repeat 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from nncli._openblas import thread_control
from nncli.nn.layers.conv import Conv2D

ROOT = Path(__file__).resolve().parents[1]
N, H, W, C, F = 128, 14, 14, 16, 32

# F(2x2, 3x3): Y = A^T [(G g G^T) * (B^T d B)] A, elementwise in the middle
G_T = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def kernel_transform(weights: np.ndarray) -> np.ndarray:
    """(F, C, 3, 3) kernels -> U as (16, C, F): G g G^T for each, flattened (a, b) first."""
    u = np.einsum("ai,fcij,bj->abcf", G_T, weights, G_T)
    return np.ascontiguousarray(u.reshape(16, weights.shape[1], weights.shape[0]))


class Winograd:
    """A 3x3, padding-1, stride-1 convolution of (N, H, W, C) images with even H and W, as
    F(2x2, 3x3), in buffers made once (a fresh 13 MB product array a call would add its page
    faults: 15 against 9 ms here)."""

    def __init__(self, shape: tuple[int, int, int, int], u: np.ndarray, bias: np.ndarray):
        n, h, w, c = shape
        self.u, self.bias, f = u, bias, u.shape[2]
        th, tw = h // 2, w // 2
        self.padded = np.zeros((n, h + 2, w + 2, c), np.float32)
        self.rows = np.empty((4, n, th, w + 2, c), np.float32)
        self.v = np.empty((4, 4, n, th, tw, c), np.float32)
        self.m = np.empty((16, n * th * tw, f), np.float32)
        self.sides = np.empty((2, 4, n, th, tw, f), np.float32)
        self.y = np.empty((n, th, 2, tw, 2, f), np.float32)

    def transform_input(self, x: np.ndarray) -> None:
        """B^T d B for every 4x4 tile: rows first (on every column), then columns, each as
        four sums of two strided views."""
        n, h, w, c = x.shape
        th, tw = h // 2, w // 2
        self.padded[:, 1:-1, 1:-1] = x
        r = [self.padded[:, k : k + 2 * th - 1 : 2] for k in range(4)]
        np.subtract(r[0], r[2], out=self.rows[0])
        np.add(r[1], r[2], out=self.rows[1])
        np.subtract(r[2], r[1], out=self.rows[2])
        np.subtract(r[1], r[3], out=self.rows[3])
        for a in range(4):
            q = [self.rows[a][:, :, k : k + 2 * tw - 1 : 2] for k in range(4)]
            np.subtract(q[0], q[2], out=self.v[a, 0])
            np.add(q[1], q[2], out=self.v[a, 1])
            np.subtract(q[2], q[1], out=self.v[a, 2])
            np.subtract(q[1], q[3], out=self.v[a, 3])

    def products(self) -> None:
        """The 16 products (tiles, C) @ (C, F), one batched np.matmul."""
        np.matmul(self.v.reshape(16, -1, self.v.shape[-1]), self.u, out=self.m)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.transform_input(x)
        self.products()
        n, h, w, _ = x.shape
        f = self.u.shape[2]
        m = self.m.reshape(4, 4, n, h // 2, w // 2, f)
        # A^T m A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]: rows, then columns
        top, bottom = self.sides
        np.add(m[0], m[1], out=top)
        top += m[2]
        np.subtract(m[1], m[2], out=bottom)
        bottom -= m[3]
        for i, side in enumerate((top, bottom)):
            left, right = self.y[:, :, i, :, 0], self.y[:, :, i, :, 1]
            np.add(side[0], side[1], out=left)
            left += side[2]
            np.subtract(side[1], side[2], out=right)
            right -= side[3]
        y = self.y.reshape(n, h, w, f)
        y += self.bias
        return y


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def page_faults_a_step(steps: int) -> tuple[float, float]:
    """(minor page faults, median ms) a training step of configs/mnist_cnn.yaml, with its batch
    of 128, on the MNIST subset shipped inside nncli (no data directory needed)."""
    from nncli.builder import build_experiment
    from nncli.config.schema import load_config
    from nncli.nn.step import step

    os.environ["NNCLI_THREADS"] = "1"  # every batch whole, in this thread
    config = load_config(ROOT / "configs" / "mnist_cnn.yaml", ["data.dataset=mnist_small", "data.val_size=0"])
    exp = build_experiment(config, ROOT, progress=False)
    x, y, batch = exp.splits.x_train, exp.splits.y_train, config.train.batch_size

    def run(count: int) -> list[float]:
        times = []
        for b in range(count):
            index = np.arange(b * batch, (b + 1) * batch) % len(x)
            start = time.perf_counter()
            step(exp.model, exp.loss, exp.optimizer, x.take(index), y[index], regularizer=exp.regularizer)
            times.append(time.perf_counter() - start)
        return times

    run(5)  # the first steps allocate what later ones reuse
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = run(steps)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return faults / steps, statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30, help="CNN steps counted for page faults")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    conv = Conv2D(F, 3, padding=1)
    conv.build((C, H, W), rng, np.float32)
    conv.needs_input_grad = True
    x = rng.random((N, H, W, C), dtype=np.float32)
    u = kernel_transform(conv.params["W"])
    bias = conv.params["b"] + np.float32(0.1)
    conv.params["b"][...] = bias

    expected = np.asarray(conv.forward(x, True)).reshape(N, H, W, F)
    winograd = Winograd(x.shape, u, bias)
    got = winograd.forward(x)
    error = float(np.abs(got - expected).max() / np.abs(expected).max())
    if error > 1e-5:
        raise SystemExit(f"winograd_forward is wrong: relative error {error:.2e}")

    programs = {
        "im2col": lambda: conv.forward(x, True),
        "winograd": lambda: winograd.forward(x),
        "products": winograd.products,
    }
    times: dict[str, list[float]] = {name: [] for name in programs}
    control = thread_control()
    with control.limit(1) if control else contextlib.nullcontext():
        for i in range(args.rounds):
            names = list(programs)
            names = names[i % len(names) :] + names[: i % len(names)]  # rotate the order
            for name in names:
                times[name].append(best_of(programs[name], args.repeat))
        faults, ms = page_faults_a_step(args.steps)
    print(f"conv2 of the MNIST CNN ({N} x {H} x {W} x {C} -> {F}), forward, one thread;"
          f" Winograd's largest difference {error:.1e} of the output's scale")
    base = times["im2col"]
    for name, got in times.items():
        ratios = [t / b for t, b in zip(got, base, strict=True)]
        print(f"  {name:9s} {statistics.median(got) * 1e3:6.2f} ms   /im2col per round "
              + ", ".join(f"{r:.2f}" for r in ratios) + f"   median {statistics.median(ratios):.2f}")
    print(f"the MNIST CNN's training step: {faults:.1f} minor page faults a step, {ms:.1f} ms"
          " (median), one thread")


if __name__ == "__main__":
    main()
