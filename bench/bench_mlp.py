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
The rounds, the processes and the report are bench/_common.py's, shared with bench_cnn.py.
"""

from __future__ import annotations

from _common import EQUAL_WORK, Workload, main

MLP = Workload(config="mnist_mlp.yaml", variants={"shipped": [], "equal": EQUAL_WORK}, torch_model="mlp")

if __name__ == "__main__":
    main(MLP, __doc__)
