#!/usr/bin/env python3
"""PyTorch's training images/s for the GPU check's table: the same nets
(Caffe's LeNet, CIFAR-10-quick, ResNet-50), batch and SGD with momentum,
FP32 with PyTorch's defaults (cuDNN autotuning on, TF32 convolutions
allowed, as memdl's default). Prints one JSON line per net.
  torch_bench.py NET BATCH [ITERS]      NET: lenet, cifar10_quick, resnet50"""
import json
import sys
import time

import torch
import torch.nn as nn


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(inplace=True), nn.Linear(500, 10))


def cifar10_quick():
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(inplace=True), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = mid * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, stride, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


def resnet50():
    try:
        import torchvision
        return torchvision.models.resnet50(num_classes=1000)
    except ImportError:
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                  nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for mid, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            for i in range(n):
                layers.append(Bottleneck(cin, mid, stride if i == 0 else 1))
                cin = mid * 4
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
        return nn.Sequential(*layers)


NETS = {"lenet": (lenet, (1, 28, 28), 10), "cifar10_quick": (cifar10_quick, (3, 32, 32), 10),
        "resnet50": (resnet50, (3, 224, 224), 1000)}


def main():
    name, batch = sys.argv[1], int(sys.argv[2])
    iters = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    make, shape, classes = NETS[name]
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    net = make().to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, *shape, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(json.dumps({"net": name, "batch": batch, "iterations": iters,
                      "images_per_s": batch * iters / dt, "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
