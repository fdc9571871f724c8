"""Benchmark: the 10,000 MNIST test images through the CNN in evaluation mode, nncli against PyTorch.

Each round runs, each in its own process and one right after the other:

  eval     nncli's evaluation pass (`nncli.nn.metrics.evaluate`, what `nncli eval` and the
           test figures of summary.json run) over the test split of configs/mnist_cnn.yaml:
           the images kept as uint8, converted to float32 and scaled a chunk of
           train.eval_batch_size at a time, forward in evaluation mode, loss, accuracy and
           confusion matrix
  predict  `nncli.load(checkpoint).predict(images)`, the uint8 images as a user hands them
           over: their checks (`nncli.data.contract`), conversion by chunk, forward, softmax
  torch    bench/torch_eval.py: ../shared/bench/torch_ref.py's CNN under `net.eval()` and
           `torch.no_grad()`, all images in one call on a float32 tensor made beforehand, as
           torch_ref scores its test set; then the argmax

Weights are each side's initialization (the time of a forward pass does not depend on them).
Every process warms up with one untimed pass, then times --repeat passes; a round's figure is
their median. The report gives each side's median over the rounds, and each round's ratio of
nncli to PyTorch (below 1: nncli is faster), in wall-clock time and in CPU time (all the
process's threads): on a machine other programs keep busy, threads that wait for a core
inflate wall-clock times, PyTorch's OpenMP threads far more than nncli's, so read both.
`--threads N` runs both sides on N threads (nncli's shards and BLAS, PyTorch's OpenMP).

    python bench/bench_eval.py [--rounds 5] [--repeat 5] [--threads N]
                               [--torch-python /tmp/torch-ref/bin/python] [--data-dir ../shared/data]

PyTorch lives in its own virtual environment, never nncli's (see ../shared/bench/torch_ref.py).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "mnist_cnn.yaml"


def nncli_passes(kind: str, repeat: int, data_dir: Path) -> None:
    """In a process of its own: time `repeat` passes of `kind` (eval or predict), one line each."""
    import numpy as np

    import nncli
    from nncli.builder import build_experiment
    from nncli.config.schema import load_config
    from nncli.nn.metrics import evaluate
    from nncli.training import checkpoint
    from nncli.training.callbacks.files import training_checkpoint
    from nncli.training.trainer import Trainer

    exp = build_experiment(load_config(CONFIG), data_dir)
    x, y = exp.splits.x_test, exp.splits.y_test
    batch = exp.config.train.eval_batch_size
    if kind == "eval":
        def run():
            report, _ = evaluate(exp.model, exp.loss, x, y, batch, num_classes=10)
            return report["samples"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "untrained.pkl"
            checkpoint.save(path, training_checkpoint(Trainer(exp), exp.resolved_config()))
            model = nncli.load(path)
        images = np.asarray(x.stored)  # the uint8 images, (N, 1, 28, 28)

        def run():
            return len(model.predict(images))

    for r in range(repeat + 1):  # the first pass warms up, untimed
        start, cpu = time.perf_counter(), time.process_time()
        done = run()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if r:
            print(f"pass {seconds:.4f} cpu {cpu:.4f}", flush=True)
    assert done == 10000, done


def passes(command: list[str], env: dict | None = None) -> tuple[list[float], list[float]]:
    """The wall-clock and CPU seconds of each timed pass of `command`."""
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    found = re.findall(r"^pass ([\d.]+) cpu ([\d.]+)", out, re.MULTILINE)
    return [float(wall) for wall, _ in found], [float(cpu) for _, cpu in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON", "/tmp/torch-ref/bin/python"))
    shared_data = str(ROOT.parent / "shared" / "data")
    parser.add_argument("--data-dir", default=os.environ.get("NNCLI_DATA_DIR", shared_data))
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both sides (default: each side's own choice)")
    parser.add_argument("--pass", dest="kind", choices=("eval", "predict"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if args.kind:
        nncli_passes(args.kind, args.repeat, data_dir)
        return
    if not (data_dir / "mnist").is_dir():
        sys.exit(f"no MNIST files under {data_dir}/mnist: set NNCLI_DATA_DIR or --data-dir")
    have_torch = Path(args.torch_python).exists()
    if not have_torch:
        print(f"no PyTorch interpreter at {args.torch_python}: timing nncli alone (see"
              " ../shared/bench/torch_ref.py for how to make one)", file=sys.stderr)
    sides = {
        kind: [sys.executable, __file__, "--pass", kind, "--repeat", str(args.repeat),
               "--data-dir", str(data_dir)]
        for kind in ("eval", "predict")
    }
    if have_torch:
        sides["torch"] = [args.torch_python, str(ROOT / "bench" / "torch_eval.py"), "--data",
                          str(data_dir / "mnist"), "--repeat", str(args.repeat)]
    env = dict(os.environ)
    if args.threads:  # both sides on that many threads: nncli's shards and BLAS, torch's OpenMP
        env.update({"NNCLI_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads),
                    "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)})
    medians: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, command in sides.items():
            times, cpu = passes(command, env)
            medians[name].append(statistics.median(times))
            cpus[name].append(statistics.median(cpu))
            print(f"round {r + 1} {name:8s} median {medians[name][-1]:.3f}s, CPU {cpus[name][-1]:.3f}s"
                  f" ({', '.join(f'{t:.3f}' for t in times)})", flush=True)
    for name, values in medians.items():
        line = (f"{name:8s} median {statistics.median(values):.3f}s for 10,000 images,"
                f" CPU {statistics.median(cpus[name]):.3f}s")
        if name != "torch" and have_torch:
            per_round = [a / b for a, b in zip(values, medians["torch"], strict=True)]
            per_cpu = [a / b for a, b in zip(cpus[name], cpus["torch"], strict=True)]
            line += (f"; ratio to torch {statistics.median(per_round):.2f} (median of rounds:"
                     f" {', '.join(f'{x:.2f}' for x in per_round)}), in CPU time"
                     f" {statistics.median(per_cpu):.2f} ({', '.join(f'{x:.2f}' for x in per_cpu)})")
        print(line)


if __name__ == "__main__":
    main()
