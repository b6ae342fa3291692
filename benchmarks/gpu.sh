#!/usr/bin/env bash
# GPU checks and benchmarks, for a machine with an NVIDIA GPU and a CUDA build of torch 2.13.0
# (PyPI's default build): first the accuracy checks of every CUDA path, then the figures.
#
#   bash benchmarks/gpu.sh            # ~10 min on one GPU; results in benchmarks/results/*_cuda.*
#   QUICK=1 bash benchmarks/gpu.sh    # a few minutes: smaller corpus, one fragment length
#
# Needs the project installed (make install, or pip install -e models -e service -e client), and
# onnxruntime-gpu for the ONNX CUDA rows (they are skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

$PY - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} sees no CUDA device; install a CUDA build of torch==2.13.0")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

# 1. Correctness of the CUDA paths (fp32 vs CPU, fp16/bf16 bars, two workers' streams, ORT CUDA EP).
$PY -m pytest -q -s -m model tests/unit/models/test_cuda.py -p no:cacheprovider

# 2. FLOPs vs the GPU's GEMM peaks; the backends on large batches (256 s of audio per call).
$PY benchmarks/limit.py --device cuda --models encodec_48khz --batch-seconds 256 \
    --backends torch,torch-w2,torch-bf16,torch-fp16,torch-fp16-w2

# 3. The study's workload end to end on the GPU: loop vs extract vs the service.
if [[ -n "${QUICK:-}" ]]; then
    SIZE=(--recordings 32 --seconds 61 --fragments 10 --rounds 2)
else
    SIZE=(--recordings 128 --seconds 61 --fragments 10,60 --rounds 4)
fi
$PY benchmarks/study_replay.py --device cuda "${SIZE[@]}" --name study_replay_cuda \
    --extract torch,torch-fp16-w2 --serve torch-fp16-w2 --concurrency 64 --batch-seconds 256

# 4. What the host can feed (decode + resample on every core).
$PY benchmarks/host.py
