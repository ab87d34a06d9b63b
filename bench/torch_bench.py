"""PyTorch CPU reference for bench/run.sh: the same LeNet and CIFAR-10-quick
definitions as bench/*.prototxt (Caffe's pooling rounds up: ceil_mode), SGD
with momentum 0.9 and weight decay 5e-4, synthetic data; prints one JSON line
per net with the median training images/s over several rounds."""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.ip1 = nn.Linear(800, 500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2, 2, ceil_mode=True)
        x = F.max_pool2d(self.conv2(x), 2, 2, ceil_mode=True)
        x = F.relu(self.ip1(x.flatten(1)))
        return self.ip2(x)


class CifarQuick(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.ip1 = nn.Linear(64 * 4 * 4, 64)
        self.ip2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 3, 2, ceil_mode=True))
        x = F.avg_pool2d(F.relu(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.avg_pool2d(F.relu(self.conv3(x)), 3, 2, ceil_mode=True)
        return self.ip2(self.ip1(x.flatten(1)))


def bench(name, model, shape, iters, rounds):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(*shape)
    y = torch.randint(0, 10, (shape[0],))
    rates = []
    for r in range(rounds + 1):  # round 0 warms up
        t0 = time.perf_counter()
        for _ in range(iters):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        dt = time.perf_counter() - t0
        if r > 0:
            rates.append(shape[0] * iters / dt)
    return {"net": name, "batch": shape[0], "threads": torch.get_num_threads(),
            "images_per_s": round(statistics.median(rates), 1), "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    print(json.dumps(bench("LeNet", LeNet(), (64, 1, 28, 28), a.iterations, a.rounds)), flush=True)
    print(json.dumps(bench("CIFAR10_quick", CifarQuick(), (100, 3, 32, 32), a.iterations,
                           a.rounds)), flush=True)


if __name__ == "__main__":
    main()
