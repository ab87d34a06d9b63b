"""Independent check of `memdl test`: evaluates LeNet weights from a
.caffemodel on the Fashion-MNIST test set with PyTorch (float64), using its
own protobuf and IDX readers, and compares loss and accuracy with the JSON
line `memdl test` printed.

  memdl test jobs/fashion_mnist/job.prototxt --weights W.caffemodel > out.txt
  /usr/bin/python3 bench/crosscheck_torch.py W.caffemodel out.txt
"""
import gzip
import json
import struct
import sys

import torch
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist/"


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        yield num, wt, v


def blob(b):
    dims, data, legacy = [], [], {}
    for num, wt, v in fields(b):
        if num == 7:
            for n2, w2, v2 in fields(v):
                if w2 == 2:
                    j = 0
                    while j < len(v2):
                        d, j = varint(v2, j)
                        dims.append(d)
                else:
                    dims.append(v2)
        elif num == 5:
            data += struct.unpack("<%df" % (len(v) // 4), v) if wt == 2 else struct.unpack("<f", v)
        elif num == 8:
            data += struct.unpack("<%dd" % (len(v) // 8), v) if wt == 2 else struct.unpack("<d", v)
        elif num in (1, 2, 3, 4):
            legacy[num] = v
    if not dims:
        dims = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    return torch.tensor(data, dtype=torch.float64).reshape(dims)


def caffemodel(path):
    layers = {}
    for num, wt, v in fields(open(path, "rb").read()):
        if num in (100, 2):  # layer, V1 layers
            name, blobs = None, []
            for n2, w2, v2 in fields(v):
                if (num == 100 and n2 == 1) or (num == 2 and n2 == 4):
                    name = v2.decode()
                elif (num == 100 and n2 == 7) or (num == 2 and n2 == 6):
                    blobs.append(blob(v2))
            if blobs:
                layers[name] = blobs
    return layers


def idx(path):
    b = gzip.open(path).read()
    ndim = b[3]
    dims = struct.unpack(">%dI" % ndim, b[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(b[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def main():
    w = caffemodel(sys.argv[1])
    x = idx(DATA + "t10k-images-idx3-ubyte.gz").double().unsqueeze(1) * 0.00390625
    y = idx(DATA + "t10k-labels-idx1-ubyte.gz").long()
    h = F.conv2d(x, w["conv1"][0], w["conv1"][1])
    h = F.max_pool2d(h, 2, 2, ceil_mode=True)
    h = F.conv2d(h, w["conv2"][0], w["conv2"][1])
    h = F.max_pool2d(h, 2, 2, ceil_mode=True)
    h = F.relu(F.linear(h.flatten(1), w["ip1"][0], w["ip1"][1]))
    out = F.linear(h, w["ip2"][0], w["ip2"][1])
    # Caffe averages per batch of 100 then over batches: the same as the mean here.
    ref = {"loss": F.cross_entropy(out, y).item(),
           "accuracy": (out.argmax(1) == y).double().mean().item()}
    print("pytorch (float64):", json.dumps(ref))
    if len(sys.argv) > 2:
        line = [l for l in open(sys.argv[2]) if l.startswith("{")][-1]
        got = json.loads(line)
        print("memdl test:       ", line.strip())
        worst = 0.0
        for k, v in ref.items():
            rel = abs(got[k] - v) / max(abs(v), 1e-12)
            worst = max(worst, rel)
            print("%-9s memdl %.6f  pytorch %.6f  relative difference %.2e" % (k, got[k], v, rel))
        print("agree to 1e-4 relative" if worst <= 1e-4 else "DISAGREE beyond 1e-4")
        sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
