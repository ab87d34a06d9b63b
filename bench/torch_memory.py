"""PyTorch reference for bench/memory.sh: the ResNet-50 of tests/nets/resnet50.prototxt
(He et al.'s Caffe model: stride 2 in the first 1x1 convolution of a stage, Caffe's
ceil-mode pooling, BatchNorm + affine, in-place ReLU) trained for a few iterations
with SGD and momentum on a synthetic batch. Run under /usr/bin/time -v: the peak
resident set is the figure. Prints one JSON line."""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride, project):
        super().__init__()
        self.a = nn.Conv2d(cin, mid, 1, stride, bias=False)
        self.bn_a = nn.BatchNorm2d(mid)
        self.b = nn.Conv2d(mid, mid, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(mid)
        self.c = nn.Conv2d(mid, 4 * mid, 1, bias=False)
        self.bn_c = nn.BatchNorm2d(4 * mid)
        self.proj = None
        if project:
            self.proj = nn.Sequential(nn.Conv2d(cin, 4 * mid, 1, stride, bias=False),
                                      nn.BatchNorm2d(4 * mid))

    def forward(self, x):
        y = F.relu(self.bn_a(self.a(x)), inplace=True)
        y = F.relu(self.bn_b(self.b(y)), inplace=True)
        y = self.bn_c(self.c(y))
        y += self.proj(x) if self.proj is not None else x
        return F.relu(y, inplace=True)


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, cin = [], 64
        for mid, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(n):
                blocks.append(Bottleneck(cin, mid, stride if i == 0 else 1, i == 0))
                cin = 4 * mid
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(2048, 1000)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = self.blocks(x)
        x = F.avg_pool2d(x, 7, 1)
        return self.fc(x.flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = ResNet50().train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(a.batch, 3, 224, 224)
    y = torch.arange(a.batch) % 1000
    t0 = time.time()
    for _ in range(a.iterations):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    print(json.dumps({"net": "ResNet-50", "batch": a.batch, "iterations": a.iterations,
                      "seconds": round(time.time() - t0, 1), "loss": float(loss)}))


if __name__ == "__main__":
    main()
