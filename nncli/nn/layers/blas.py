"""Matrix products in the orientation the BLAS runs fastest.

`a @ b` and `(b.T @ a.T).T` are the same matrix, but the BLAS sees two different problems: the
first fills a C-ordered (M, N) result, the second a C-ordered (N, M) one. OpenBLAS, which numpy's
wheels ship, is markedly slower when the C-ordered result has fewer rows than columns, which
is the usual shape of a layer's output: (batch, units) with a batch of 128 and 256-1024 units.
Measured alone, in float32, on the 2-core AVX-512 machine that bench/bench_mlp.py ran on:

    (128, 784) @ (784, 512):   735 us as a @ b,   535 us as (b.T @ a.T).T
    (128, 256) @ (256, 512):   320 us,            190 us

on a loaded machine; on an idle one they differ by up to 10% either way, and in the MNIST MLP's
training loop the transposed products save 2-3% of a batch. When the result has more rows than
columns (a large evaluation batch), `a @ b` is the faster one: 1,024 x 784 by 784 x 512 takes
4.1 ms that way against 5.0 ms transposed.

The result of the transposed product is a Fortran-ordered view; numpy's element-wise operations
keep that order, and the next layer's product, taken the same way, reads it as the C-ordered
array it is underneath.
"""

from __future__ import annotations

import functools

import numpy as np

from nncli._openblas import thread_control


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b` for 2-D arrays, computed so that the BLAS fills a result with more rows than
    columns: the returned array may be a transposed (Fortran-ordered) view."""
    if a.shape[0] < b.shape[1]:
        return np.matmul(b.T, a.T).T
    return np.matmul(a, b)


_ONES: dict[tuple[int, str], np.ndarray] = {}


def column_sums(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """`a.sum(axis=0)` for a 2-D array, as the product `ones @ a`.

    numpy's reduction over the rows of a (128, 512) float32 array is 4x slower than this product
    (21 against 4.7 us) when the array is a transposed view, as `matmul`'s results are, and 2x
    slower (8 against 3.6 us) when it is not.

    The product is `np.dot`'s, not `np.matmul`'s: numpy 2.4's matmul holds the GIL through a
    matrix-vector product (18 us for the MNIST CNN's second convolution's bias gradient, 35 for
    its first's, on a Zen 5), where the shards' threads wait for it; dot releases it, and is a
    little faster. Their sums are equal where `a` is C- or F-contiguous; on a shard's rows of a
    column-major array ((64, 10), strides (4, 512): the MNIST CNN's last gradient) they round
    otherwise, so runs sharded so round otherwise than before this change (its test accuracy
    98.97% became 98.94%).
    """
    key = (a.shape[0], a.dtype.str)
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = np.ones(a.shape[0], a.dtype)
    return np.dot(ones, a, out=out)


# OpenBLAS's kernels for AVX-512 (its SkylakeX target, which numpy's wheels pick on the Zen 5
# these figures come from) multiply operands in place, without packing them, when the product
# is small: M*N*K at most 100**3. Products cut to that size are faster than one large one. For
# the MNIST CNN's second convolution (196 rows a sample), 128 samples' worth of
#     (196, 145) @ (145, 32)     1.03 ms as 128 products of one sample, 1.26 ms as 16 of eight
#     (196, 288) @ (288, 16)     1.37 ms,                               1.48 ms
#     (288, 196) @ (196, 16)     1.38 ms,                               1.85 ms
# and for its first, (100352, 10) @ (10, 16) and (10, 100352) @ (100352, 16) take 0.21 and
# 0.33 ms as 32 products of 4 samples against 0.36 and 0.47 as one (one thread, median of 15
# or 20, 3 rounds, each in one batched np.matmul: numpy's loop over the blocks runs in C).
# Under OPENBLAS_CORETYPE=Haswell, which has no such kernel, the blocks take 0.90 to 1.12 of
# the time of one product, layer by layer (conv1's backward the slowest): so products are cut
# only where the BLAS is OpenBLAS with one of the targets that have the kernel
# (`small_products_unpacked`), and run whole elsewhere (AMD Zen 2/3 and Intel without AVX-512
# get OpenBLAS's Haswell kernels; MKL and BLIS have their own ways with small products).
SMALL_PRODUCT = 100**3
UNPACKED_SMALL = {"SkylakeX", "Cooperlake", "SapphireRapids"}  # OpenBLAS's names for them


@functools.lru_cache(maxsize=1)
def small_products_unpacked() -> bool:
    """Whether numpy's BLAS is OpenBLAS running kernels that multiply small products unpacked
    (its AVX-512 targets), as threadpoolctl reports it: False where it cannot tell."""
    control = thread_control()
    if control is None:
        return False
    libraries = control.controller.lib_controllers
    return all(lib.internal_api == "openblas" and getattr(lib, "architecture", None) in UNPACKED_SMALL
               for lib in libraries)


def product_blocks(samples: int, rows: int, k: int, n: int) -> int:
    """`small_blocks` where the BLAS has unpacked small-product kernels, else 1: one product."""
    return small_blocks(samples, rows, k, n) if small_products_unpacked() else 1


def small_blocks(samples: int, rows: int, k: int, n: int) -> int:
    """How many equal blocks of samples a product (samples * rows, k) @ (k, n) is best run as,
    in one batched np.matmul: the fewest whose products stay within SMALL_PRODUCT, else one
    block a sample. The rows of a block stay together, so the same blocks serve a product
    that sums over the rows, (k, samples * rows) @ (samples * rows, n), block by block."""
    for blocks in range(1, samples + 1):
        if samples % blocks == 0 and (samples // blocks) * rows * k * n <= SMALL_PRODUCT:
            return blocks
    return samples


def row_blocks(a: np.ndarray, blocks: int) -> np.ndarray:
    """A 2-D array (R, K), C-ordered or a transposed view of one, as (blocks, R / blocks, K)
    without a copy: consecutive rows in each block."""
    if a.flags.c_contiguous:
        return a.reshape(blocks, -1, a.shape[1])
    return a.T.reshape(a.shape[1], blocks, -1).transpose(1, 2, 0)
