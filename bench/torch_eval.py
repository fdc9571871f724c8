"""PyTorch's side of bench_eval.py: the 10,000 MNIST test images through the CNN, in eval mode.

The network is ../shared/bench/torch_ref.py's `cnn`, defined the same way (conv 16@3x3 pad 1 -
ReLU - maxpool 2 - conv 32@3x3 pad 1 - ReLU - maxpool 2 - linear 128 - ReLU - linear 10,
float32), and run as torch_ref scores its test set: `net.eval()`, `torch.no_grad()`, all the
images in one call, on a float32 tensor made beforehand (x / 255). Its weights are its
initialization: the time of a forward pass does not depend on them.

Run it with the PyTorch interpreter (its own venv, never nncli's):
    /tmp/torch-ref/bin/python bench/torch_eval.py --data ../shared/data/mnist [--repeat 7] [--batch N]
Prints one line per timed pass, 'pass <seconds> cpu <CPU seconds of all its threads>', then
'threads=<torch's intra-op threads>'.
"""

import argparse
import gzip
import struct
import time

import numpy as np
import torch
import torch.nn as nn


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    nd = struct.unpack(">I", raw[:4])[0] & 0xFF
    dims = struct.unpack(">" + "I" * nd, raw[4 : 4 + 4 * nd])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * nd).reshape(dims)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--batch", type=int, default=0, help="images per call; 0: all in one (torch_ref's way)")
    a = p.parse_args()
    torch.manual_seed(0)
    x = torch.tensor(idx(f"{a.data}/t10k-images-idx3-ubyte.gz"), dtype=torch.float32) / 255.0
    x = x.reshape(-1, 1, 28, 28)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    net.eval()
    batch = a.batch or len(x)
    with torch.no_grad():
        for r in range(a.repeat + 1):  # the first pass warms up, untimed
            start, cpu = time.perf_counter(), time.process_time()
            out = torch.cat([net(x[i : i + batch]) for i in range(0, len(x), batch)])
            predicted = out.argmax(1)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            if r:
                print(f"pass {seconds:.4f} cpu {cpu:.4f}", flush=True)
    assert predicted.shape == (len(x),)
    print(f"threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
