"""Benchmark: nncli's MNIST MLP epoch against PyTorch's on the CPU, one after the other.

Runs `nncli train configs/mnist_mlp.yaml` and ../shared/bench/torch_ref.py `mlp` alternately
(nncli, torch, nncli, torch, ...), each in its own process, and reports the median epoch time
of each, the median of the per-round ratios (each taken one right after the other), the ratio
of the fastest epochs seen, nncli's peak memory (max RSS) and both test accuracies. Shared
machines drift between speeds for tens of seconds at a time, so a single round proves little:
read the per-round ratios.

Both see the same work per epoch: 60,000 training images (the config's validation split is
set to 0 here, since torch_ref trains on all 60,000), batch 128, float32, SGD with momentum.

    python bench/bench_mlp.py [--rounds 2] [--epochs 3] [--torch-python /tmp/torch-ref/bin/python]

PyTorch lives in its own virtual environment, never nncli's (see torch_ref.py's docstring).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run_nncli(epochs: int, data_dir: Path) -> tuple[list[float], float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        proc = subprocess.Popen(
            [
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
                "data.val_size=0",
                "--set",
                f"train.epochs={epochs}",
                "--set",
                "train.early_stopping=null",
            ],
            stdout=subprocess.DEVNULL,
        )
        # wait4 gives this child's own peak resident memory, not the largest of all children
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"nncli train failed with exit code {proc.returncode}")
        with open(run / "metrics.csv", newline="") as f:
            times = [float(row["epoch_time_s"]) for row in csv.DictReader(f)]
        import json

        test = json.loads((run / "summary.json").read_text())["test"]["accuracy"]
    return times, usage.ru_maxrss / 1024, test


def run_torch(python: str, epochs: int, data_dir: Path) -> tuple[float, float]:
    out = subprocess.run(
        [
            python,
            str(SHARED / "bench" / "torch_ref.py"),
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
    match = re.search(r"epoch_s=([\d.]+) test_acc=([\d.]+)", out)
    return float(match[1]), float(match[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/tmp/torch-ref/bin/python"))
    parser.add_argument("--data-dir", default=os.environ.get("NNCLI_DATA_DIR", str(SHARED / "data")))
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not (data_dir / "mnist").is_dir():
        sys.exit(f"no MNIST files under {data_dir}/mnist: set NNCLI_DATA_DIR or --data-dir")
    have_torch = Path(args.torch_python).exists()
    if not have_torch:
        print(f"no PyTorch interpreter at {args.torch_python}: timing nncli alone", file=sys.stderr)

    ours, theirs, peaks, fastest = [], [], [], []
    for r in range(args.rounds):
        times, peak, acc = run_nncli(args.epochs, data_dir)
        ours.append(statistics.median(times))
        fastest.append(min(times))
        peaks.append(peak)
        print(
            f"round {r + 1}: nncli epoch {ours[-1]:.3f}s (epochs {', '.join(f'{t:.3f}' for t in times)}),"
            f" test acc {acc:.4f}, peak RSS {peak:.0f} MiB",
            flush=True,
        )
        if have_torch:
            epoch_s, acc = run_torch(args.torch_python, args.epochs, data_dir)
            theirs.append(epoch_s)
            print(f"round {r + 1}: torch epoch {epoch_s:.3f}s, test acc {acc:.4f}", flush=True)
    line = f"nncli median epoch {statistics.median(ours):.3f}s, peak RSS {max(peaks):.0f} MiB"
    if theirs:
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        line += (
            f"; torch median epoch {statistics.median(theirs):.3f}s;"
            f" best-epoch ratio {min(fastest) / min(theirs):.2f};"
            f" ratio nncli/torch {statistics.median(ratios):.2f}"
            f" (per round: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    print(line)


if __name__ == "__main__":
    main()
