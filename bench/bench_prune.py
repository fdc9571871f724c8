"""A sweep with pruning against the same sweep without: wall time and the best trial found.

Runs `nncli sweep` on the two sweep files (default configs/sweeps/lr.yaml and lr_asha.yaml,
the same 27 runs, the second with ASHA) one after the other, --rounds times, alternating which
goes first, each into a fresh folder under --work, with the same --jobs; then prints each
round's wall times, the median ratio, and each sweep's best trial (its metric mean over the
seeds, from summary.csv) and whether the pruned sweep found the same trial. The load average
is printed before and after each sweep: other work on the machine skews both.

usage (from the repository root, with nncli installed; the MNIST files in $NNCLI_DATA_DIR):
    NNCLI_DATA_DIR=../shared/data python3 bench/bench_prune.py --jobs 2 --rounds 1
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def run(sweep: Path, out: Path, jobs: int) -> tuple[float, dict]:
    """(wall seconds, the best row of summary.csv) of one sweep into `out`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nncli", "sweep", str(sweep), "--jobs", str(jobs),
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(out / "summary.csv", newline="") as f:
        return wall, next(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plain", type=Path, default=Path("configs/sweeps/lr.yaml"))
    parser.add_argument("--pruned", type=Path, default=Path("configs/sweeps/lr_asha.yaml"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="where the sweeps' folders go")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-prune-"))
    ratios = []
    for n in range(args.rounds):
        order = [("plain", args.plain), ("pruned", args.pruned)]
        if n % 2:
            order.reverse()
        found = {}
        for name, sweep in order:
            before = load()
            wall, best = run(sweep, work / f"{name}{n}", args.jobs)
            found[name] = (wall, best)
            metric = next(k for k in best if k.endswith("_mean") and k != "test_mean")
            print(f"round {n} {name:6}: {wall:7.1f} s (load {before} -> {load()}); best trial"
                  f" {best['runs'].split()[0][:6]}.. {metric} {float(best[metric]):.4f}, status"
                  f" {best['status']}")
        (plain_wall, plain_best), (pruned_wall, pruned_best) = found["plain"], found["pruned"]
        metric = next(k for k in plain_best if k.endswith("_mean") and k != "test_mean")
        ratios.append(pruned_wall / plain_wall)
        same = plain_best["runs"] == pruned_best["runs"]
        gap = (float(plain_best[metric]) - float(pruned_best[metric])) * 100
        print(f"round {n}: pruned / plain wall time {ratios[-1]:.2f}; {'the same' if same else 'another'}"
              f" best trial, {gap:+.2f} points behind the plain sweep's best")
    print(f"median ratio over {args.rounds} round(s): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
