"""Benchmark: nncli's MNIST CNN epoch against PyTorch's on the CPU, one after the other.

Each round runs, each in its own process and one right after the other:

  equal  `nncli train configs/mnist_cnn.yaml` with `data.val_size=0`, no early stopping and no
         augmentation: 60,000 images an epoch, the work torch_ref does.
  torch  ../shared/bench/torch_ref.py `cnn`: conv 16@3x3 pad 1 - ReLU - maxpool 2 - conv 32@3x3
         pad 1 - ReLU - maxpool 2 - linear 128 - ReLU - linear 10, batch 128, float32, SGD with
         momentum, 60,000 images an epoch.

It reports each one's median epoch time over the rounds, the ratio of those medians, the ratio of
the fastest epochs seen (the machine at its quietest), nncli's peak memory (max RSS) and the test
accuracies. A CNN epoch takes far longer than an MLP's, hence fewer rounds and epochs by default
than bench_mlp.py's; shared machines drift between speeds, so read every round.

    python bench/bench_cnn.py [--rounds 3] [--epochs 2] [--torch-python /tmp/torch-ref/bin/python]
                              [--torch-ref ../shared/bench/torch_ref.py] [--data-dir ../shared/data]

PyTorch lives in its own virtual environment, never nncli's (see torch_ref.py's docstring).
The rounds, the processes and the report are bench/_common.py's, shared with bench_mlp.py.
"""

from __future__ import annotations

from _common import EQUAL_WORK, Workload, main

# torch_ref trains on the images as they are: no augmentation on nncli's side either
CNN = Workload(
    config="mnist_cnn.yaml",
    variants={"equal": [*EQUAL_WORK, "--set", "data.augment=[]"]},
    torch_model="cnn",
    rounds=3,
    epochs=2,
)

if __name__ == "__main__":
    main(CNN, __doc__)
