#!/usr/bin/env bash
# Builds what the GPU check needs on this machine (CUDA toolkit present, no
# GPU needed) and packs it for a GPU machine that has none of our Debian
# packages and no network: tests/gpu/pack/memdl-gpu-check.tar.gz (git
# ignores pack/), at most 64 MiB. Holds memdl, libmemdl_cuda.so beside it,
# the gpu_test binary (layer checks), every shared library ldd lists except
# glibc's and CUDA's own (the GPU machine has cuDNN, cuBLAS and the CUDA
# runtime as pip wheels under nvidia/), the nets and jobs of this folder and
# the 10000 Fashion-MNIST test images. Then tests/gpu/run_check.sh runs it.
#   tests/gpu/prepare.sh            (MDL_CUDA_ARCHS=90 builds for H100 only)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
out=tests/gpu/pack
stage=$out/memdl-gpu-check

bazel build //:memdl //gpu:libmemdl_cuda.so //tests:gpu_test
grep -q '^found' bazel-bin/gpu/cuda_status.txt || {
  echo "prepare: no CUDA in this build: $(cat bazel-bin/gpu/cuda_status.txt)" >&2
  exit 1
}

rm -rf "$stage" && mkdir -p "$stage"/{lib,gpu,tests/nets,jobs/data}
cp -L bazel-bin/memdl bazel-bin/gpu/libmemdl_cuda.so bazel-bin/tests/gpu_test "$stage"/
cp -L bazel-bin/gpu/cuda_status.txt "$stage"/gpu/
cp tests/nets/lenet.prototxt tests/nets/cifar10_quick.prototxt tests/nets/resnet50.prototxt \
  "$stage"/tests/nets/
cp tests/gpu/*.prototxt jobs/fashion_mnist/lenet_train_test.prototxt \
  jobs/fashion_mnist/lenet_solver.prototxt "$stage"/jobs/
cp /usr/share/datasets/fashion-mnist/t10k-*-ubyte.gz "$stage"/jobs/data/
# ResNet-50 at batch 32 with a loss (as the PyTorch side trains it) for the
# throughput table
sed -e 's/dim: 1 dim: 3 dim: 224 dim: 224/dim: 32 dim: 3 dim: 224 dim: 224/' \
  -e 's/^layer { name: "prob" type: "Softmax".*$/layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 32 } } }\nlayer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1000" bottom: "label" top: "loss" }/' \
  tests/nets/resnet50.prototxt >"$stage"/tests/nets/resnet50_b32.prototxt
grep -q SoftmaxWithLoss "$stage"/tests/nets/resnet50_b32.prototxt || {
  echo "prepare: tests/nets/resnet50.prototxt changed; its loss was not added" >&2
  exit 1
}
cp tests/gpu/run_check.sh tests/gpu/torch_bench.py tests/gpu/compare_losses.py "$stage"/

# shared libraries: all but glibc's (the GPU machine's own) and CUDA's (its
# pip wheels); cuDNN's sub-libraries never show in ldd, they come from there too
skip='^(libc|libm|libpthread|libdl|librt|libresolv|libutil|ld-linux-x86-64|libcudnn[a-z_]*|libcublas(Lt)?|libcudart|libnvrtc)\.so'
# (ldd on the built files: the test's own libraries sit in Bazel's _solib
# folder, found through its $ORIGIN-relative runpath)
for b in bazel-bin/memdl bazel-bin/tests/gpu_test bazel-bin/gpu/libmemdl_cuda.so; do
  if ldd "$b" | grep 'not found'; then
    echo "prepare: $b has unresolved libraries" >&2
    exit 1
  fi
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  name=$(basename "$lib")
  [[ $name =~ $skip ]] && continue
  cp -L "$lib" "$stage"/lib/"$name"
done

tar -C "$out" -czf "$out"/memdl-gpu-check.tar.gz memdl-gpu-check
rm -rf "$stage"
size=$(stat -c %s "$out"/memdl-gpu-check.tar.gz)
echo "prepare: $out/memdl-gpu-check.tar.gz, $((size / 1048576)) MiB"
if [ "$size" -gt $((64 * 1048576)) ]; then
  echo "prepare: over the 64 MiB a device call carries" >&2
  exit 1
fi
