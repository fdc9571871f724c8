"""OpenBLAS as numpy ships it: its kernels on AMD Zen 4, and its thread count.

`apply()` picks OpenBLAS's AVX2 kernels on AMD Zen 4, before numpy loads OpenBLAS (below).
`thread_control()` finds the OpenBLAS that numpy's products run in, so that a training step run
as shards in several Python threads can hold it to one thread per shard (nncli.nn.parallel).

OpenBLAS, as numpy's wheels ship it (0.3.31 with numpy 2.4), chooses its kernels by CPU
feature at load time. Zen 4 reports AVX-512, so it gets the SkylakeX kernels, written for Intel
cores with full-width 512-bit units; Zen 4 runs AVX-512 through 256-bit halves, and there
OpenBLAS's AVX2 (Haswell) kernels, the ones it uses on Zen 2 and 3, multiply the MNIST MLP's
matrices about a tenth faster: (128, 527) @ (527, 512) in float32 takes 347 us against 387,
and an epoch of configs/mnist_mlp.yaml 1.86 ms a batch against 1.95, measured on a 2-core
Zen 4 (EPYC, family 25 with avx512f). On larger products (5000 x 784 x 512) they are level.

OpenBLAS reads the choice from the environment variable OPENBLAS_CORETYPE once, when numpy is
first imported, so this must run before that: `nncli/__init__.py` calls `apply()` first thing.
A user's own OPENBLAS_CORETYPE, whatever its value, is left alone; so is a process that had
imported numpy before nncli (the kernels are chosen by then). Zen 5 (family 26) has full-width
AVX-512 units and is left alone too. OpenBLAS 0.3.34 retunes its blocking for Zen 4: when
numpy's wheels move to it, `make bench` with OPENBLAS_CORETYPE=SkylakeX set says whether this
still pays.

`import nncli` runs `apply()`, so this module imports only what the interpreter has loaded
already (os, sys); ctypes and glob, which only `thread_control()` needs, are imported there.
"""

from __future__ import annotations

import os
import sys

ZEN4_FAMILY = 25  # 0x19: Zen 3 and Zen 4; only Zen 4 has avx512f


def coretype_for(cpuinfo: str) -> str | None:
    """The OPENBLAS_CORETYPE to set for the CPU that /proc/cpuinfo's text describes, or None."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break  # the first processor's block is enough: the others are alike
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if fields.get("vendor_id") != "AuthenticAMD" or fields.get("cpu family") != str(ZEN4_FAMILY):
        return None
    return "Haswell" if "avx512f" in fields.get("flags", "").split() else None


def apply() -> None:
    """Set OPENBLAS_CORETYPE for this process when it helps and is still in time."""
    if "OPENBLAS_CORETYPE" in os.environ or "numpy" in sys.modules:
        return
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpuinfo = f.read()
    except OSError:
        return
    coretype = coretype_for(cpuinfo)
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype


class ThreadControl:
    """The OpenBLAS library numpy multiplies with, and its thread-count functions.

    `initial` is the number of threads it was started with (OPENBLAS_NUM_THREADS,
    GOTO_NUM_THREADS or OMP_NUM_THREADS, else the CPUs the process may run on), read once,
    before nncli changed anything. (A plain class: dataclasses, with the inspect module it
    imports, made up most of the time `import nncli` took.)
    """

    __slots__ = ("path", "get", "set", "initial")

    def __init__(self, path: str, get, set, initial: int):  # noqa: A002 (OpenBLAS's names)
        self.path, self.get, self.set, self.initial = path, get, set, initial

    def __repr__(self) -> str:
        return f"ThreadControl(path={self.path!r}, initial={self.initial})"

    def threads(self) -> int:
        return int(self.get())

    def set_threads(self, n: int) -> None:
        self.set(n)


_CONTROL: list[ThreadControl | None] = []  # [] until looked for, then [the answer]


def thread_control() -> ThreadControl | None:
    """numpy's OpenBLAS, if numpy multiplies with OpenBLAS, its library is found and it runs
    its own threads (pthreads) or none; else None, and nothing may assume control of the BLAS
    threads: MKL, Accelerate, BLIS, an OpenMP build of OpenBLAS (whose thread count is per
    calling thread), or a library this cannot identify. Looked for once per process."""
    if not _CONTROL:
        try:
            _CONTROL.append(_find_control())
        except (OSError, AttributeError, ValueError, ImportError):
            _CONTROL.append(None)
    return _CONTROL[0]


# OpenBLAS's functions, as threadpoolctl looks them up: plain, or renamed as the scipy-openblas
# builds in numpy's wheels are (scipy_openblas_get_num_threads64_ for the 64-bit integer one)
_PREFIXES = ("", "scipy_")
_SUFFIXES = ("", "64_", "_64")
_SEQUENTIAL, _PTHREADS = 0, 1  # openblas_get_parallel(); 2 is OpenMP


def _find_control() -> ThreadControl | None:
    import ctypes

    import numpy as np

    config = getattr(getattr(np, "__config__", None), "CONFIG", None)  # numpy >= 1.26
    if not isinstance(config, dict):
        return None
    blas = config.get("Build Dependencies", {}).get("blas", {})
    if "openblas" not in str(blas.get("name", "")).lower():
        return None
    paths = _openblas_libraries(os.path.dirname(np.__file__))
    if len(paths) != 1:
        return None  # none, or several and no telling which one numpy uses
    lib = ctypes.CDLL(paths[0])  # already loaded by numpy: the same library, not a second copy
    get = _symbol(lib, "openblas_get_num_threads")
    set_ = _symbol(lib, "openblas_set_num_threads")
    parallel = _symbol(lib, "openblas_get_parallel")
    if get is None or set_ is None or parallel is None:
        return None
    get.restype, get.argtypes = ctypes.c_int, []
    set_.restype, set_.argtypes = None, [ctypes.c_int]
    parallel.restype, parallel.argtypes = ctypes.c_int, []
    if parallel() not in (_SEQUENTIAL, _PTHREADS):
        return None
    initial = get()
    return ThreadControl(paths[0], get, set_, initial) if initial >= 1 else None


def _openblas_libraries(numpy_dir: str) -> list[str]:
    """The OpenBLAS libraries this process has loaded (Linux), else those bundled with numpy's
    wheels (numpy.libs on Linux and Windows, numpy/.dylibs on macOS). Where numpy bundles one
    and others are loaded too (scipy's own), numpy's."""
    import glob

    bundled = [
        path
        for folder in (numpy_dir + ".libs", os.path.join(numpy_dir, ".dylibs"))
        for path in glob.glob(os.path.join(folder, "*openblas*"))
    ]
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            mapped = {line.split(None, 5)[-1].strip() for line in f if "openblas" in line.lower()}
    except OSError:
        return sorted(set(bundled))
    loaded = sorted(p for p in mapped if "openblas" in os.path.basename(p).lower() and os.path.isfile(p))
    ours = [p for p in loaded if any(os.path.samefile(p, b) for b in bundled)]
    return ours or loaded


def _symbol(lib, name: str):
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            found = getattr(lib, f"{prefix}{name}{suffix}", None)
            if found is not None:
                return found
    return None
