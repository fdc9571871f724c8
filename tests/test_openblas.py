"""nncli/_openblas.py: which CPUs get OPENBLAS_CORETYPE=Haswell, and that a user's choice wins."""

import os
import subprocess
import sys

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


# numpy's own OpenBLAS, where numpy has one: found, and its threads set and read back

def test_openblas_symbols_are_found_under_their_scipy_names():
    class Lib:
        scipy_openblas_get_num_threads64_ = "found"

    assert _openblas._symbol(Lib(), "openblas_get_num_threads") == "found"
    assert _openblas._symbol(Lib(), "openblas_set_num_threads") is None


def test_numpys_openblas_threads_can_be_set():
    control = _openblas.thread_control()
    if control is None:
        pytest.skip("numpy's BLAS here is not an OpenBLAS nncli can control")
    before = control.threads()
    try:
        control.set_threads(1)
        assert control.threads() == 1
    finally:
        control.set_threads(before)
    assert control.threads() == before >= 1


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
