"""nncli/_openblas.py: which CPUs get OPENBLAS_CORETYPE=Haswell, and that a user's choice wins;
which BLAS libraries training may hold to one thread a shard, and that they are held."""

import os
import subprocess
import sys
import threading

import pytest

from nncli import _openblas
from nncli._openblas import coretype_for


def cpuinfo(vendor: str, family: int, flags: str) -> str:
    block = (
        f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
        f"model\t\t: 17\nflags\t\t: {flags}\n"
    )
    return block + "\n" + block.replace(": 0", ": 1")


ZEN4 = cpuinfo("AuthenticAMD", 25, "fpu sse2 avx2 fma avx512f avx512dq avx512bw")


@pytest.mark.parametrize(
    "text, expected",
    [
        (ZEN4, "Haswell"),
        (cpuinfo("AuthenticAMD", 25, "fpu sse2 avx2 fma"), None),  # Zen 3: no AVX-512
        (cpuinfo("AuthenticAMD", 26, "fpu avx2 avx512f"), None),  # Zen 5: full-width AVX-512
        (cpuinfo("GenuineIntel", 6, "fpu avx2 avx512f"), None),
        (cpuinfo("AuthenticAMD", 25, "fpu avx512fp16"), None),  # a flag that only starts alike
        ("", None),
    ],
)
def test_coretype_for(text, expected):
    assert coretype_for(text) == expected


def run_import(env_extra: dict[str, str], code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_a_users_coretype_is_left_alone():
    code = "import nncli, os; print(os.environ['OPENBLAS_CORETYPE'])"
    assert run_import({"OPENBLAS_CORETYPE": "SkylakeX"}, code) == "SkylakeX"


def test_nothing_is_set_once_numpy_is_loaded():
    code = "import numpy, nncli, os; print(os.environ.get('OPENBLAS_CORETYPE', 'unset'))"
    assert run_import({}, code) == "unset"


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux's /proc/cpuinfo")
def test_importing_nncli_first_sets_what_this_cpu_calls_for():
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        expected = coretype_for(f.read()) if os.uname().machine == "x86_64" else None
    code = "import nncli, os; print(os.environ.get('OPENBLAS_CORETYPE', 'unset'))"
    assert run_import({}, code) == (expected or "unset")


# numpy's BLAS, through threadpoolctl: which libraries may be held to one thread, and on the
# BLAS numpy has here, held so in every thread that asks while the caller holds it

class Lib:
    """A threadpoolctl library controller, as far as nncli uses one: its count, and its setter,
    which records every count set."""

    def __init__(self, internal_api: str, threading_layer: str, num_threads: int | None = 4):
        self.internal_api, self.threading_layer = internal_api, threading_layer
        self.num_threads = num_threads
        self.sets: list[int] = []

    def set_num_threads(self, num_threads: int) -> None:
        self.sets.append(num_threads)
        self.num_threads = num_threads


class Controller:
    def __init__(self, *libs: Lib):
        self.lib_controllers = list(libs)


@pytest.mark.parametrize(
    "libs, initial",
    [
        ([Lib("openblas", "pthreads")], 4),  # numpy's and scipy's wheels
        ([Lib("openblas", "disabled", 1)], 1),  # a sequential build: trains serially unless asked
        ([Lib("mkl", "intel")], 4),  # conda's defaults numpy
        ([Lib("mkl", "gnu", 3)], 3),
        ([Lib("blis", "pthreads")], 4),  # conda-forge's blas=*=blis
        ([Lib("blis", "openmp", 2)], 2),
        ([Lib("openblas", "pthreads", 6), Lib("openblas", "pthreads", 2)], 2),  # numpy's and scipy's
        ([Lib("openblas", "openmp")], None),  # its count is per thread, and not reliably settable
        ([Lib("flexiblas", "pthreads")], None),
        ([Lib("mkl", "tbb")], None),
        ([Lib("openblas", "pthreads"), Lib("mkl", "tbb")], None),
        ([Lib("blis", "pthreads", None)], None),
        ([], None),  # Accelerate, or a BLAS threadpoolctl does not know
    ],
)
def test_which_blas_libraries_are_held_to_one_thread(libs, initial):
    control = _openblas.control_for(Controller(*libs))
    assert (None if control is None else control.initial) == initial


def loaded_blas() -> list[dict]:
    import numpy  # noqa: F401 (loads its BLAS)
    from threadpoolctl import threadpool_info

    return [info for info in threadpool_info() if info["user_api"] == "blas"]


# numpy's wheels (OpenBLAS, pthreads) run the first; conda's numpy built on MKL (`conda install
# numpy mkl`) or on BLIS (`conda install numpy "blas=*=blis"`) runs the others; on any other
# build, each says which BLAS it found and skips
@pytest.mark.parametrize("blas", ["openblas", "mkl", "blis"])
def test_numpys_blas_is_held_to_one_thread_in_every_shard_thread(blas):
    found = [info["internal_api"] for info in loaded_blas()]
    if blas not in found:
        pytest.skip(f"numpy here runs on {found or 'no BLAS threadpoolctl knows'}, not {blas}")
    control = _openblas.thread_control()
    assert control is not None, control
    assert any(name.startswith(blas) for name in control.libraries())
    before = control.threads()
    seen = []

    def worker():
        with control.one_thread():
            seen.append(control.threads())

    with control.one_thread():
        assert control.threads() == 1
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen == [1]
    assert control.threads() == before >= 1
    assert _openblas.thread_control() is control  # looked for once


def test_the_threads_openblas_was_started_with_are_what_training_may_use():
    """`nncli sweep` gives each worker OPENBLAS_NUM_THREADS = cores // jobs: a worker held to one
    thread trains serially."""
    if _openblas.thread_control() is None:
        pytest.skip("numpy's BLAS here is not an OpenBLAS nncli can control")
    code = (
        "from nncli._openblas import thread_control; from nncli.nn.parallel import threads_allowed;"
        " print(thread_control().initial, threads_allowed())"
    )
    assert run_import({"OPENBLAS_NUM_THREADS": "1"}, code) == "1 1"


def test_a_limit_the_blas_already_runs_at_changes_nothing():
    """Twice a step, a model enters its BLAS setting: where the count is already so (the BLAS's
    own threads chosen, or a shard's thread inside the caller's hold), nothing is set or restored."""
    lib = Lib("openblas", "pthreads", 2)
    control = _openblas.control_for(Controller(lib))
    with control.limit(2):
        assert control.threads() == 2
    assert lib.sets == []
    with control.one_thread():
        assert control.threads() == 1
        with control.one_thread():  # nested: as it is
            assert control.threads() == 1
    assert lib.sets == [1, 2] and control.threads() == 2  # set once, and restored
    # where libraries differ, the limit is set in each, and each gets its own count back
    libs = [Lib("openblas", "pthreads", 2), Lib("openblas", "pthreads", 1)]
    with _openblas.control_for(Controller(*libs)).limit(2):
        assert [lib.num_threads for lib in libs] == [2, 2]
    assert [lib.num_threads for lib in libs] == [2, 1]
    # an exception in the block restores the counts too
    with pytest.raises(KeyError), control.one_thread():
        raise KeyError("x")
    assert control.threads() == 2
