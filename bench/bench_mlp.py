"""Benchmark: nncli's MNIST MLP epoch against PyTorch's on the CPU, one after the other.

Each round runs, each in its own process and one right after the other:

  shipped  `nncli train configs/mnist_mlp.yaml` exactly as shipped: 55,000 training images an
           epoch (5,000 are held out for validation). Its median `epoch_time_s` is the figure
           the issue's target names.
  equal    the same with `data.val_size=0`: 60,000 images an epoch, the work torch_ref does.
  torch    ../shared/bench/torch_ref.py `mlp`: 784-512-256-10, batch 128, float32, SGD with
           momentum, 60,000 images an epoch.

It reports each one's median epoch time over the rounds, the ratios of those medians to torch's,
the ratios of the fastest epochs seen (the machine at its quietest), nncli's peak memory (max RSS)
and the test accuracies. Shared machines drift between speeds for tens of seconds at a time, so
one round proves little: run several and read them all.

    python bench/bench_mlp.py [--rounds 5] [--epochs 3] [--torch-python /tmp/torch-ref/bin/python]
                              [--torch-ref ../shared/bench/torch_ref.py] [--data-dir ../shared/data]

PyTorch lives in its own virtual environment, never nncli's (see torch_ref.py's docstring).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
VARIANTS = {"shipped": [], "equal": ["--set", "data.val_size=0", "--set", "train.early_stopping=null"]}


def run_nncli(variant: str, epochs: int, data_dir: Path) -> tuple[list[float], float, float]:
    """Epoch times, peak RSS in MiB, and test accuracy of one `nncli train` process."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [
            sys.executable,
            "-m",
            "nncli",
            "train",
            str(ROOT / "configs" / "mnist_mlp.yaml"),
            "--quiet",
            "--run-dir",
            str(run),
            "--data-dir",
            str(data_dir),
            "--set",
            f"train.epochs={epochs}",
            *VARIANTS[variant],
        ]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        # wait4 gives this child's own peak resident memory, not the largest of all children
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"nncli train failed with exit code {os.waitstatus_to_exitcode(status)}")
        with open(run / "metrics.csv", newline="") as f:
            times = [float(row["epoch_time_s"]) for row in csv.DictReader(f)]
        test = json.loads((run / "summary.json").read_text())["test"]["accuracy"]
    return times, usage.ru_maxrss / 1024, test


def run_torch(python: str, script: str, epochs: int, data_dir: Path) -> tuple[list[float], float]:
    out = subprocess.run(
        [
            python,
            script,
            "mlp",
            "--epochs",
            str(epochs),
            "--data",
            str(data_dir / "mnist"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    times = [float(t) for t in re.findall(r"^epoch \d+ ([\d.]+)s", out, re.MULTILINE)]
    return times, float(re.search(r"epoch_s=[\d.]+ test_acc=([\d.]+)", out)[1])


def openblas_kernels() -> str:
    """Which OpenBLAS kernels the nncli runs will use (see nncli/_openblas.py)."""
    code = "import nncli, os; print(os.environ.get('OPENBLAS_CORETYPE', ''))"
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    if not chosen:
        return "OpenBLAS's own choice for this CPU"
    if os.environ.get("OPENBLAS_CORETYPE"):
        return f"OPENBLAS_CORETYPE={chosen}, set by you"
    return f"OPENBLAS_CORETYPE={chosen}, set by nncli for this CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/tmp/torch-ref/bin/python"))
    parser.add_argument("--torch-ref", default=str(SHARED / "bench" / "torch_ref.py"))
    parser.add_argument("--data-dir", default=os.environ.get("NNCLI_DATA_DIR", str(SHARED / "data")))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "mnist").is_dir():
        sys.exit(f"no MNIST files under {data_dir}/mnist: set NNCLI_DATA_DIR or --data-dir")
    have_torch = Path(args.torch_python).exists() and Path(args.torch_ref).is_file()
    if not Path(args.torch_python).exists():
        print(
            f"no PyTorch interpreter at {args.torch_python}: timing nncli alone. To compare with"
            " PyTorch, set up its reference in a virtual environment of its own (never nncli's):\n"
            f"  python3 -m venv {Path(args.torch_python).parent.parent}"
            f" && {Path(args.torch_python).parent}/pip install torch==2.13.0 numpy\n"
            "then run make bench again (TORCH_PYTHON=... names another interpreter)",
            file=sys.stderr,
        )
    elif not have_torch:
        print(f"no torch_ref.py at {args.torch_ref}: timing nncli alone", file=sys.stderr)

    print(f"nncli's matrix products: {openblas_kernels()}", flush=True)
    medians: dict[str, list[float]] = {name: [] for name in (*VARIANTS, "torch")}
    fastest: dict[str, float] = {}
    peak = 0.0
    for r in range(args.rounds):
        for name in (*VARIANTS, "torch"):
            if name == "torch":
                if not have_torch:
                    continue
                times, acc = run_torch(args.torch_python, args.torch_ref, args.epochs, data_dir)
                extra = ""
            else:
                times, rss, acc = run_nncli(name, args.epochs, data_dir)
                peak = max(peak, rss)
                extra = f", peak RSS {rss:.0f} MiB"
            medians[name].append(statistics.median(times))
            fastest[name] = min(fastest.get(name, float("inf")), *times)
            print(
                f"round {r + 1} {name:8s} median epoch {medians[name][-1]:.3f}s"
                f" ({', '.join(f'{t:.3f}' for t in times)}), test acc {acc:.4f}{extra}",
                flush=True,
            )
    print(f"nncli peak RSS {peak:.0f} MiB")
    for name in medians:
        if not medians[name]:
            continue
        line = f"{name:8s} median epoch {statistics.median(medians[name]):.3f}s, fastest {fastest[name]:.3f}s"
        if name != "torch" and medians["torch"]:
            ratio = statistics.median(medians[name]) / statistics.median(medians["torch"])
            per_round = [a / b for a, b in zip(medians[name], medians["torch"], strict=True)]
            line += (
                f"; ratio to torch {ratio:.2f} (medians), {fastest[name] / fastest['torch']:.2f} (fastest"
                f" epochs), per round {', '.join(f'{x:.2f}' for x in per_round)}"
            )
        print(line)


if __name__ == "__main__":
    main()
