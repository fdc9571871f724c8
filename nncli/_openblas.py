"""Pick OpenBLAS's AVX2 kernels on AMD Zen 4, before numpy loads OpenBLAS.

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
"""

from __future__ import annotations

import os
import platform
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
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            cpuinfo = f.read()
    except OSError:
        return
    coretype = coretype_for(cpuinfo)
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
