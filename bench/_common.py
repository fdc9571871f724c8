"""What the benchmarks against PyTorch share: an nncli config and ../shared/bench/torch_ref.py's
model of the same workload, trained one after the other in separate processes, round after
round, and the report of their epoch times, nncli's peak memory and the test accuracies.

A benchmark script names its `Workload` and calls `main(workload, __doc__)` (the docstring's
first line describes it in `--help`). Run as `python bench/<script>.py`, a script finds this
module beside it: Python puts the script's folder first on the import path.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# what makes nncli's epoch the work torch_ref's is: all 60,000 training images, none held out
# for validation, and no early stopping (which would watch the validation loss)
EQUAL_WORK = ["--set", "data.val_size=0", "--set", "train.early_stopping=null"]


@dataclass(frozen=True)
class Workload:
    config: str  # the config file, under configs/
    variants: dict[str, list[str]]  # a name for each way of training it, and its extra arguments
    torch_model: str  # torch_ref.py's name for the same workload
    rounds: int = 5  # defaults of --rounds and --epochs
    epochs: int = 3

    @property
    def config_path(self) -> Path:
        return ROOT / "configs" / self.config


def run_nncli(
    config: Path, extra: list[str], epochs: int, data_dir: Path
) -> tuple[list[float], float, float]:
    """Epoch times, peak RSS in MiB, and test accuracy of one `nncli train` process."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [
            sys.executable,
            "-m",
            "nncli",
            "train",
            str(config),
            "--quiet",
            "--run-dir",
            str(run),
            "--data-dir",
            str(data_dir),
            "--set",
            f"train.epochs={epochs}",
            *extra,
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


def run_torch(python: str, script: str, model: str, epochs: int, data_dir: Path) -> tuple[list[float], float]:
    out = subprocess.run(
        [
            python,
            script,
            model,
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


def parse_args(workload: Workload, doc: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=workload.rounds)
    parser.add_argument("--epochs", type=int, default=workload.epochs)
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/tmp/torch-ref/bin/python"))
    parser.add_argument("--torch-ref", default=str(SHARED / "bench" / "torch_ref.py"))
    parser.add_argument("--data-dir", default=os.environ.get("NNCLI_DATA_DIR", str(SHARED / "data")))
    return parser.parse_args()


def torch_available(python: str, script: str) -> bool:
    """Whether PyTorch's side can run; when it cannot, say why and how to set it up."""
    if not Path(python).exists():
        print(
            f"no PyTorch interpreter at {python}: timing nncli alone. To compare with"
            " PyTorch, set up its reference in a virtual environment of its own (never nncli's):\n"
            f"  python3 -m venv {Path(python).parent.parent}"
            f" && {Path(python).parent}/pip install torch==2.13.0 numpy\n"
            "then run make bench again (TORCH_PYTHON=... names another interpreter)",
            file=sys.stderr,
        )
        return False
    if not Path(script).is_file():
        print(f"no torch_ref.py at {script}: timing nncli alone", file=sys.stderr)
        return False
    return True


def main(workload: Workload, doc: str) -> None:
    args = parse_args(workload, doc)
    data_dir = Path(args.data_dir)
    if not workload.config_path.is_file():
        config = workload.config_path.relative_to(ROOT)
        sys.exit(f"{config} does not exist: this benchmark times `nncli train {config}` against"
                 f" torch_ref.py {workload.torch_model}")
    have_torch = torch_available(args.torch_python, args.torch_ref)
    if args.rounds > 0 and not (data_dir / "mnist").is_dir():
        sys.exit(f"no MNIST files under {data_dir}/mnist: set NNCLI_DATA_DIR or --data-dir")

    print(f"nncli's matrix products: {openblas_kernels()}", flush=True)
    medians: dict[str, list[float]] = {name: [] for name in (*workload.variants, "torch")}
    fastest: dict[str, float] = {}
    peak = 0.0
    for r in range(args.rounds):
        for name in (*workload.variants, "torch"):
            if name == "torch":
                if not have_torch:
                    continue
                times, acc = run_torch(
                    args.torch_python, args.torch_ref, workload.torch_model, args.epochs, data_dir
                )
                extra = ""
            else:
                times, rss, acc = run_nncli(
                    workload.config_path, workload.variants[name], args.epochs, data_dir
                )
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
