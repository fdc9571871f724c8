"""OpenBLAS as numpy ships it: its kernels on AMD Zen 4; and numpy's BLAS's thread count.

`apply()` picks OpenBLAS's AVX2 kernels on AMD Zen 4, before numpy loads OpenBLAS (below).
`thread_control()` finds, through threadpoolctl, the BLAS that numpy's products run in (OpenBLAS,
MKL or BLIS), so that a training step run as shards in several Python threads can hold it to one
thread per shard (nncli.nn.parallel).

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
already (os, sys); threadpoolctl, which only `thread_control()` needs, is imported there.
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
    """The BLAS libraries numpy's products run in, as threadpoolctl found them: held to one
    thread while a batch runs as shards (nncli.nn.parallel).

    `initial` is the number of threads they were started with (OPENBLAS_NUM_THREADS,
    MKL_NUM_THREADS, OMP_NUM_THREADS..., else the CPUs), read once, before nncli changed
    anything; where several are loaded (scipy's own OpenBLAS beside numpy's), the fewest.
    (A plain class: dataclasses, with the inspect module it imports, made up most of the time
    `import nncli` took.)
    """

    __slots__ = ("controller", "initial")

    def __init__(self, controller, initial: int):
        self.controller, self.initial = controller, initial

    def __repr__(self) -> str:
        return f"ThreadControl({self.libraries()}, initial={self.initial})"

    def libraries(self) -> list[str]:
        """'openblas (pthreads)', 'mkl (intel)', 'blis (openmp)'...: one a library controlled."""
        return [f"{lib.internal_api} ({lib.threading_layer})" for lib in self.controller.lib_controllers]

    def threads(self) -> int:
        """The threads the BLAS may use now, in this thread (the fewest, over its libraries)."""
        return min(lib.num_threads for lib in self.controller.lib_controllers)

    def one_thread(self):
        """A context manager that holds the BLAS to one thread in its block, then restores it.

        Every thread that runs a shard enters it: OpenBLAS (pthreads) and BLIS keep one count
        for the process, so the caller's block holds the workers too (theirs do nothing more);
        MKL's count is per calling thread where threadpoolctl sets it so (3.8 does), so each
        needs its own."""
        return self.limit(1)

    def limit(self, threads: int):
        """A context manager that sets the BLAS to `threads` threads in its block (for OpenBLAS
        and BLIS, the process's count), then restores it; nothing where every library runs
        `threads` already.

        It calls each library controller's own setter, as threadpoolctl's limiters do, without
        the limiter: a model enters this twice a step (forward and backward), and the
        controller's `limit`, which records every library's full description to restore, cost
        17 us an entry and exit alone and 38 us around a (64, 479) @ (479, 256) product (240
        against 202 us held throughout), against 7.6 and 12-20 us so (reading a count costs
        1 us, setting one 1.5; one thread, the Zen 2 EPYC of the README); `threadpool_limits`,
        which also looks for the libraries again each time, took 235 us."""
        libs = self.controller.lib_controllers
        if all(lib.num_threads == threads for lib in libs):
            return _AS_IT_IS
        return _Limit(libs, threads)


class _Limit:
    """`ThreadControl.limit`'s block: the libraries' counts read and set on entry, put back on exit."""

    __slots__ = ("libs", "threads", "saved")

    def __init__(self, libs: list, threads: int):
        self.libs, self.threads, self.saved = libs, threads, []

    def __enter__(self):
        self.saved = [lib.num_threads for lib in self.libs]
        for lib in self.libs:
            lib.set_num_threads(self.threads)
        return None

    def __exit__(self, *exc):
        for lib, threads in zip(self.libs, self.saved, strict=True):
            lib.set_num_threads(threads)
        return None


class _AsItIs:
    """A context manager that changes nothing (contextlib's nullcontext, without importing
    contextlib before numpy: see the module's docstring)."""

    __slots__ = ()

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


_AS_IT_IS = _AsItIs()

_CONTROL: list[ThreadControl | None] = []  # [] until looked for, then [the answer]

#: threading layers whose count threadpoolctl can hold to one for every thread that enters
#: `one_thread()`; an OpenMP build of OpenBLAS is left out (before OpenBLAS 0.3.34 its count
#: cannot be set per thread; threadpoolctl's notes), as are FlexiBLAS and anything unknown
_CONTROLLABLE = {
    "openblas": {"pthreads", "disabled"},
    "mkl": {"intel", "gnu", "pgi", "sequential"},
    "blis": {"pthreads", "openmp", "disabled"},
}


def thread_control() -> ThreadControl | None:
    """numpy's BLAS, if threadpoolctl finds it and can hold its threads to one (OpenBLAS with
    its own threads or none, MKL, BLIS); else None, and nothing may assume control of the BLAS
    threads: Accelerate, an OpenMP build of OpenBLAS, FlexiBLAS, or a library threadpoolctl
    cannot identify. Looked for once per process: a BLAS loaded later (scipy's, imported after
    the first sharded batch) is not held."""
    if not _CONTROL:
        try:
            _CONTROL.append(_find_control())
        except (OSError, AttributeError, ValueError, ImportError):
            _CONTROL.append(None)
    return _CONTROL[0]


def _find_control() -> ThreadControl | None:
    import numpy  # noqa: F401 (loads the BLAS that threadpoolctl then finds)
    from threadpoolctl import ThreadpoolController

    return control_for(ThreadpoolController().select(user_api="blas"))


def control_for(controller) -> ThreadControl | None:
    """A ThreadControl for a threadpoolctl controller of BLAS libraries, or None where one of
    them cannot be held to one thread (or there are none)."""
    libs = controller.lib_controllers
    if not libs:
        return None
    for lib in libs:
        layers = _CONTROLLABLE.get(lib.internal_api, set())
        if getattr(lib, "threading_layer", None) not in layers:
            return None
    counts = [lib.num_threads for lib in libs]
    if not all(isinstance(n, int) and n >= 1 for n in counts):
        return None
    return ThreadControl(controller, min(counts))
