"""Benchmark: nncli's automatic threads against each fixed choice, on a quiet machine and with a
busy process holding one core.

Issue 21's targets: on a quiet machine the automatic choice (NNCLI_THREADS unset) is within 5%
of the best fixed choice for the quickstart, the MLP and the CNN; with a competing busy process
it is within 1.3x of the best fixed choice, and at least 3x faster than today's default on the
quickstart ("today's default": how nncli ran before the choice was measured, the BLAS with its
own threads on a whole batch for the MLPs (NNCLI_THREADS=blas), and two shards in two threads
for the CNN on 2 CPUs (NNCLI_THREADS=2)).

The choices, each `nncli train` in a process of its own:

  auto  NNCLI_THREADS unset: shards fixed by the CPUs, the model and the batch size, the BLAS
        held to one thread, and the threads that run the shards measured (one, or one a shard);
        at the start, batches whole with the BLAS's own threads are timed too, and kept where
        they are faster by 5% (then left for good if the steps slow down)
  1     NNCLI_THREADS=1: every batch whole, in one thread
  2     NNCLI_THREADS=2: two shards (where the model shards at all) in two threads
  blas  NNCLI_THREADS=blas: every batch whole, the BLAS with its own threads

The CNN is timed without `blas` unless --cnn-blas: whole batches with the BLAS's threads were
never how nncli ran it, and beside a busy loop an epoch of it takes minutes. On the quickstart,
`1` and `2` run the same way (its batches of 64 are too small to shard): their difference, like
auto's from them, is the machine's noise.

The workloads: configs/quickstart.yaml (the MNIST subset shipped inside nncli), and the MNIST
MLP and CNN (configs/mnist_mlp.yaml, mnist_cnn.yaml) on the first --mlp-images / --cnn-images
training images of $NNCLI_DATA_DIR/mnist (written to a temporary folder, with 1,000 test images,
so that a round stays short even where a choice is 30x slower), no validation split. The figure
is each run's median epoch_time_s over the epochs after the first, every choice alike: the
speed a choice keeps. An automatic run measures before its first epoch (in the whole runs, not
in the epochs), and its first epoch pays once for what follows a measurement that timed the
BLAS's own threads: they spin for more work for 0.1 s, on a core the shards' threads want. The
report gives each choice's first epoch less that median. Taken as one of three epochs, auto's
slower first made the median of an automatic run the slower of its two others: on the CNN's
48 steps an epoch, 1.06 of `2` over 10 rounds where both ran every step in 2 threads, the
steps' medians alike (5.7 against 5.4-6.0 ms). The quickstart runs as configured,
its 12 epochs (about 1.5 s on a quiet core, as `make quickstart` trains it): the median of 11
epochs of 0.13 s each moves less with the noise than one of 2. The MLP and the CNN run 3
epochs. --epochs N runs every workload N epochs (2 at least).

Each round runs both conditions (quiet, then busy: `python -c "while True: pass"` pinned to the
last CPU, started before and ended after that condition's runs), and within each, every workload
and every choice, in an order that rotates from round to round and is reversed every other
round (so that no choice always follows the same one), a second's pause before each. The report
gives each choice's median over the rounds, and the per-round ratios of auto to the best fixed
choice (the one with the smallest median) and to today's default, with their medians; then the
quickstart's whole runs, start to exit (imports, evaluation, files and curves too), as a user
times it. The machine's load average is printed before and after: on a shared machine "quiet"
is only as quiet as the other users let it be, and on the quickstart, where auto, 1 and 2 run
the same code, their spread is the noise.

    python bench/bench_load.py [--rounds 3] [--epochs N] [--data-dir ../shared/data]
                               [--only quickstart,mlp,cnn] [--conditions quiet,busy] [--cnn-blas]
                               [--then PATH]

`--then PATH` times, as the choice `then`, the nncli in the folder PATH (a checkout of main
2233a71, the code issue 21 measured: `git worktree add --detach ../old 2233a71`) with its own
default, in this environment: "today's default" as it was, not as `blas` runs it now.

About 6 minutes with the defaults on 2 quiet cores (the busy runs of today's default dominate).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

CHOICES = {"auto": None, "1": "1", "2": "2", "blas": "blas"}
FIXED = ("1", "2", "blas")
# how nncli ran each workload before the threads were measured (main before issue 21)
TODAY = {"quickstart": "blas", "mlp": "blas", "cnn": "2"}
WORKLOADS = {
    "quickstart": ("quickstart.yaml", []),
    "mlp": ("mnist_mlp.yaml", ["--set", "data.val_size=0", "--set", "train.early_stopping=null"]),
    "cnn": ("mnist_cnn.yaml", ["--set", "data.val_size=0"]),
}
TARGETS = {"quiet": 1.05, "busy": 1.3}  # auto against the best fixed choice, at most
# epochs a run, unless --epochs: the quickstart as configured (None), the others 3
EPOCHS = {"quickstart": None, "mlp": 3, "cnn": 3}
SETTLE_S = 1.0  # a pause before each run, for the machine to settle after the last
# the CNN whole with the BLAS's threads was never nncli's way to run it, and on a loaded machine
# an epoch of it takes minutes: timed only with --cnn-blas
CNN_CHOICES = ("auto", "1", "2")


def write_idx(path: Path, array) -> None:
    """An IDX file (gzip), as MNIST's: uint8 data of 1 to 3 dimensions."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.tobytes())


def subset(source: Path, target: Path, images: int) -> None:
    """The first `images` training images of MNIST (and 1,000 test images) under target/mnist."""
    from nncli.data.idx import read_idx

    (target / "mnist").mkdir(parents=True)
    for name, n in (("train", images), ("t10k", 1000)):
        for kind in ("images-idx3", "labels-idx1"):
            file = f"{name}-{kind}-ubyte.gz"
            write_idx(target / "mnist" / file, read_idx(source / "mnist" / file)[:n])


def run(config: Path, extra: list[str], choice: str, epochs: int | None, data_dir: Path,
        then: Path | None) -> tuple[float, float, float]:
    """The median epoch time after the first epoch, the first epoch's time less that, and the
    wall time (start to exit) of one `nncli train` with NNCLI_THREADS as `choice` says (`then`:
    the nncli in the folder `then`, with its own default), for `epochs` (None: the config's)."""
    env = {k: v for k, v in os.environ.items() if k != "NNCLI_THREADS"}
    if choice == "then":
        env["PYTHONPATH"] = str(then)
    elif CHOICES[choice] is not None:
        env["NNCLI_THREADS"] = CHOICES[choice]
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "nncli", "train", str(config), "--quiet", "--run-dir",
                   f"{tmp}/run", "--data-dir", str(data_dir), *extra]
        if epochs is not None:
            command += ["--set", f"train.epochs={epochs}"]
        # `then` runs in its folder: `python -m` puts the working folder first on the import path
        start = time.perf_counter()
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              cwd=then if choice == "then" else None)
        wall = time.perf_counter() - start
        if done.returncode:
            sys.exit(f"nncli train {config.name} (NNCLI_THREADS={CHOICES[choice]}) failed:\n{done.stderr}")
        with open(f"{tmp}/run/metrics.csv", newline="") as f:
            epochs = [float(row["epoch_time_s"]) for row in csv.DictReader(f)]
        if len(epochs) < 2:
            sys.exit(f"nncli train {config.name} ran {len(epochs)} epochs: the figure needs two at least")
        first, rest = epochs[0], epochs[1:]
        after = statistics.median(rest)
        return after, first - after, wall


class Busy:
    """A Python busy loop pinned to one CPU, for the length of a `with` block."""

    def __init__(self, cpu: int | None):
        self.cpu, self.proc = cpu, None

    def __enter__(self):
        cpu = self.cpu

        def pin():
            if cpu is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, {cpu})

        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pin)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of every run (default: the quickstart's 12, 3 for the others)")
    parser.add_argument("--data-dir", default=os.environ.get("NNCLI_DATA_DIR", str(SHARED / "data")))
    parser.add_argument("--only", default="quickstart,mlp,cnn", help="workloads, comma-separated")
    parser.add_argument("--conditions", default="quiet,busy")
    parser.add_argument("--mlp-images", type=int, default=8192, help="MNIST training images (MLP)")
    parser.add_argument("--cnn-images", type=int, default=6144, help="MNIST training images (CNN)")
    parser.add_argument("--cnn-blas", action="store_true", help="time the CNN with NNCLI_THREADS=blas too")
    parser.add_argument("--then", type=Path, default=None,
                        help="a checkout of the nncli the issue measured (main 2233a71), timed too")
    parser.add_argument("--busy-cpu", type=int, default=None, help="the CPU the busy loop is pinned to"
                        " (default: the last this process may use; -1: not pinned)")
    args = parser.parse_args()
    if args.rounds < 1 or (args.epochs is not None and args.epochs < 2):
        sys.exit("--rounds must be at least 1, --epochs at least 2")
    workloads = [w.strip() for w in args.only.split(",") if w.strip()]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if not set(workloads) <= set(WORKLOADS) or not set(conditions) <= set(TARGETS):
        sys.exit(f"--only takes {', '.join(WORKLOADS)}; --conditions takes quiet, busy")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    busy_cpu = cpus[-1] if args.busy_cpu is None else (None if args.busy_cpu < 0 else args.busy_cpu)
    source = Path(args.data_dir).resolve()
    if {"mlp", "cnn"} & set(workloads) and not (source / "mnist").is_dir():
        sys.exit(f"no MNIST files under {source}/mnist: set NNCLI_DATA_DIR or --data-dir")

    print(f"{cpu_name()}, {len(cpus)} CPUs; load average {load()} before; busy loop pinned to CPU"
          f" {busy_cpu}", flush=True)
    choices = {w: list(CHOICES) if w != "cnn" or args.cnn_blas else list(CNN_CHOICES) for w in workloads}
    if args.then is not None:
        if not (args.then / "nncli" / "__init__.py").is_file():
            sys.exit(f"--then {args.then}: no nncli package there")
        for names in choices.values():
            names.append("then")
    times = {(c, w, k): [] for c in conditions for w in workloads for k in choices[w]}
    walls = {key: [] for key in times}
    firsts = {key: [] for key in times}  # the first epoch less the median of the others
    with tempfile.TemporaryDirectory() as tmp:
        data = {"quickstart": source}
        for name, images in (("mlp", args.mlp_images), ("cnn", args.cnn_images)):
            if name in workloads:
                subset(source, Path(tmp) / name, images)
                data[name] = Path(tmp) / name
        for r in range(args.rounds):
            for condition in conditions:
                with Busy(busy_cpu) if condition == "busy" else contextlib.nullcontext():
                    for w in workloads:
                        config, extra = WORKLOADS[w]
                        names = choices[w]
                        for choice in order(names, r):
                            time.sleep(SETTLE_S)
                            epochs = EPOCHS[w] if args.epochs is None else args.epochs
                            t, first, wall = run(ROOT / "configs" / config, extra, choice, epochs, data[w],
                                          args.then)
                            times[condition, w, choice].append(t)
                            firsts[condition, w, choice].append(first)
                            walls[condition, w, choice].append(wall)
                        line = ", ".join(f"{k} {times[condition, w, k][-1]:.3f}" for k in names)
                        print(f"round {r + 1} {condition:5s} {w:10s} median epoch s after the first: {line}",
                              flush=True)
    print(f"load average {load()} after")
    report(times, firsts, conditions, choices)
    if "quickstart" in workloads:
        whole_runs(walls, conditions, choices["quickstart"])


def order(names: list[str], r: int) -> list[str]:
    """Round `r`'s order of the choices: rotated by r, and reversed in odd rounds. A rotation
    alone gives each choice the same predecessor in every round, and a run right after a heavy
    one (today's default beside a busy loop keeps both cores busy for seconds) can be slowed by
    it: auto, always after `then`, timed 1.20 of `1` beside the busy loop over 5 rounds so
    (twice), 1.05 over 6 rounds in this order, and 1.00 over 4 rounds of auto and `1` alone."""
    turned = names[r % len(names):] + names[: r % len(names)]
    return turned[::-1] if r % 2 else turned


def report(times: dict, firsts: dict, conditions: list[str], choices: dict[str, list[str]]) -> None:
    for condition in conditions:
        for w, names in choices.items():
            got = {k: times[condition, w, k] for k in names}
            medians = ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in got.items())
            # the best fixed choice: the one with the smallest median over the rounds (a per-round
            # minimum over the choices would favour them: the least of three noisy draws)
            fixed = min((k for k in FIXED if k in got), key=lambda k: statistics.median(got[k]))
            vs_best = [a / b for a, b in zip(got["auto"], got[fixed], strict=True)]
            vs_today = [t / a for a, t in zip(got["auto"], got[TODAY[w]], strict=True)]
            target = TARGETS[condition]
            ok = statistics.median(vs_best) <= target
            print(f"{condition:5s} {w:10s} median epoch s after the first: {medians}")
            extra = ", ".join(f"{k} {statistics.median(firsts[condition, w, k]):+.3f}" for k in names)
            print(f"      the first epoch less that, median: {extra}")
            rounds = ", ".join(f"{x:.2f}" for x in vs_best)
            print(f"      auto / best fixed ({fixed}) per round {rounds}, median"
                  f" {statistics.median(vs_best):.2f} (target <= {target}: {'met' if ok else 'NOT met'});"
                  f" today's default ({TODAY[w]}) / auto per round {', '.join(f'{x:.2f}' for x in vs_today)},"
                  f" median {statistics.median(vs_today):.2f}"
                  + speedup_verdict(condition, w, vs_today))
            if "then" in got:
                vs_then = [t / a for a, t in zip(got["auto"], got["then"], strict=True)]
                rounds = ", ".join(f"{x:.2f}" for x in vs_then)
                print(f"      the nncli of --then (its default) / auto per round {rounds},"
                      f" median {statistics.median(vs_then):.2f}" + speedup_verdict(condition, w, vs_then))


def whole_runs(walls: dict, conditions: list[str], names: list[str]) -> None:
    """The quickstart's whole runs, start to exit, as a user times `make quickstart` (issue 21
    measured today's default so: 20 s and 13 s beside a busy process, 2.7 s in one thread): its
    evaluations, files and curves too, which the epoch times leave out."""
    for condition in conditions:
        got = {k: walls[condition, "quickstart", k] for k in names}
        medians = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in got.items())
        print(f"{condition:5s} quickstart whole run s (median): {medians}")
        for other in ("blas", "then"):
            if other in got and condition == "busy":
                ratios = [t / a for a, t in zip(got["auto"], got[other], strict=True)]
                print(f"      {other} / auto per round {', '.join(f'{x:.2f}' for x in ratios)},"
                      f" median {statistics.median(ratios):.2f}")


def speedup_verdict(condition: str, workload: str, ratios: list[float]) -> str:
    """The busy quickstart's target against today's default: 3x faster at least."""
    if condition != "busy" or workload != "quickstart":
        return ""
    return f" (target >= 3: {'met' if statistics.median(ratios) >= 3 else 'NOT met'})"


if __name__ == "__main__":
    main()
