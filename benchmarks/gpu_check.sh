#!/usr/bin/env bash
# On a machine with a CUDA GPU: the tests marked `cuda` (they are skipped elsewhere), the performance benchmark at
# batch 1, 8 and 64 with a profile of the default model, and a one-rank torchrun evaluation on the GPU. Prints
# everything; exits non-zero if a step fails.
#
#   bash benchmarks/gpu_check.sh            # about 15 minutes on one GPU
set -euo pipefail
cd "$(dirname "$0")/.."

uv run python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: run this on a GPU machine"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

echo "== tests marked cuda (none may be skipped)"
uv run pytest -m cuda -q -rs -p no:cacheprovider tests | tee /tmp/gpu_check_tests.txt
if grep -q "SKIPPED" /tmp/gpu_check_tests.txt; then
    echo "error: cuda tests were skipped on a CUDA machine" >&2
    exit 1
fi

echo "== performance at batch 1, 8 and 64: Lite0 (recommended), MobileNetV3, ConvNeXt, EfficientNet-B0, ResNet50, ViT,"
echo "   PVT (batch 1 with the extras: ascent, 10 targets, SmoothGrad)"
uv run python benchmarks/performance.py --device cuda --batches 1 8 64

echo "== where the time goes on the GPU: Lite0 with its recommended settings, batch 64"
uv run python benchmarks/performance.py --device cuda --models lite0 --batches 64 --no-extras --profile

echo "== evaluate under torchrun on the GPU (one rank, cuda:LOCAL_RANK)"
out=$(mktemp -d)
uv run python -m torch.distributed.run --standalone --nproc-per-node 1 -m semantic_pullbacks evaluate \
    --device cuda --fast --methods SoftPullback,Gradient,SmoothGrad --metrics infidelity,max_sensitivity,focus \
    --batch-size 64 --quiet --no-chart --out "$out"
