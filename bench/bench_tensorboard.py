"""What TensorBoard logging adds to a training step: the per-step scalars (loss and learning
rate) of nncli's logger, written as a run writes them (buffered, appended at each epoch's end),
against tensorboardX's SummaryWriter (an event per scalar through a queue to a writer thread).

Alternating rounds of --steps steps each, medians of CPU time (this process, all threads) and
wall time per step.

usage (from the repository root, with nncli and tensorboardX installed):
    python3 bench/bench_tensorboard.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from nncli.training.callbacks.tensorboard import TensorBoardLogger

STEPS_PER_EPOCH = 430  # MNIST's 55,000 training images in batches of 128


def nncli_logger(steps: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        logger = TensorBoardLogger(Path(folder), {"name": "bench"}, "name: bench\n")
        state = SimpleNamespace(epoch=0, step=0)
        trainer = SimpleNamespace(state=state, exp=SimpleNamespace(optimizer=SimpleNamespace(lr=0.1)))
        logger.on_train_begin(trainer)
        for i in range(steps):
            state.step += 1
            logger.on_batch_end(trainer, i, 0.5)
            if state.step % STEPS_PER_EPOCH == 0:
                logger.file.flush()
        logger.close()


def summary_writer(steps: int) -> None:
    from tensorboardX import SummaryWriter

    with tempfile.TemporaryDirectory() as folder:
        writer = SummaryWriter(folder, flush_secs=10)
        for i in range(1, steps + 1):
            writer.add_scalar("step/train_loss", 0.5, i)
            writer.add_scalar("step/lr", 0.1, i)
        writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, tuple[list[float], list[float]]] = {}
    for _ in range(args.rounds):
        for name, run in (("nncli logger", nncli_logger), ("tensorboardX SummaryWriter", summary_writer)):
            cpu, wall = time.process_time(), time.perf_counter()
            run(args.steps)
            cpus, walls = times.setdefault(name, ([], []))
            cpus.append((time.process_time() - cpu) / args.steps * 1e6)
            walls.append((time.perf_counter() - wall) / args.steps * 1e6)
    for name, (cpus, walls) in times.items():
        print(f"{name:28s} {statistics.median(cpus):7.1f} us CPU  {statistics.median(walls):7.1f} us wall"
              " per step (medians)")
    (ours, _), (theirs, _) = times.values()
    print(f"CPU ratio: {statistics.median(ours) / statistics.median(theirs):.2f}")


if __name__ == "__main__":
    main()
