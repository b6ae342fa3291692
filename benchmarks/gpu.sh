#!/usr/bin/env bash
# The GPU run, in one go: install sonovec from the kit (no network), then the CUDA correctness tests
# and the GPU figures, each stage under a timeout inside one overall budget. A failing stage does not
# stop the later ones. Made for the device machine (one H200, 16 cores, Python 3.12 with torch 2.11,
# no network); see benchmarks/README.md, "The GPU run".
#
#   bash scripts/gpu-kit.sh                  # here, once: .gpu-kit/ (CPython 3.12 wheels, ~31 MiB)
#   bash benchmarks/gpu.sh [OUTDIR]          # there: OUTDIR defaults to $OUT, else benchmarks/results/gpu-run
#   GPU_SH_DEVICE=cpu GPU_SH_KIT=/tmp/kit PYTHON=/tmp/venv/bin/python bash benchmarks/gpu.sh /tmp/out
#                                            # the dry run on a CPU: every stage at toy size
#
# Stages (each writes NAME.json, NAME.png and/or NAME.log, NAME ending in _cuda, or _dry on a CPU):
#   env      torch, CUDA, the GPU, the TF32 switches, the kit's versions, pip check
#   tests    tests/unit/models/test_cuda.py: cuda fp32 vs cpu fp32, fp16/bf16 bars, two workers' streams
#   limit    benchmarks/limit.py --device cuda: GEMM peaks (fp32 IEEE with TF32 off, bf16, fp16), backends
#   sweep    benchmarks/batch_sweep.py: encoder throughput vs batch size, 48 and 24 kHz, fp32/bf16/fp16
#   corpus   the study's recordings, generated on every core (not timed as a benchmark)
#   study    benchmarks/study_replay.py --device cuda: loop vs extract vs the service on loopback
#   host     benchmarks/host.py: decode + resample on 1 and all cores
# nvidia-smi is sampled every 0.5 s throughout (nvidia_smi_*.csv); summary.md and summary.json say,
# per stage, its status, wall time, GPU utilisation and memory, and its table.
#
# OUTDIR receives at most 8 files (what the device tool brings back): summary.md, summary.json,
# gpu.log, gpu-results.tar.gz (everything, named as in benchmarks/results/) and the stages' PNGs.
#
# Environment: PYTHON (python3), GPU_SH_DEVICE (cuda), GPU_SH_KIT (.gpu-kit; "none": use the installed
# packages), GPU_SH_BUDGET (470 s for everything), GPU_SH_RECORDINGS (96 study recordings),
# GPU_SH_STAGES (tests,limit,sweep,corpus,study,host: a second run can redo only some; env always runs,
# and study and host need corpus), GPU_SH_SOURCE (tree: the project's code from this checkout, its
# dependencies and sonovec.v1 from the kit; kit: the kit's wheels of the project too).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
DEVICE=${GPU_SH_DEVICE:-cuda}
KIT=${GPU_SH_KIT:-.gpu-kit}
BUDGET=${GPU_SH_BUDGET:-470}
STAGES=${GPU_SH_STAGES:-tests,limit,sweep,corpus,study,host}
OUTDIR=${1:-${OUT:-benchmarks/results/gpu-run}}
RESERVE=20  # seconds kept for the summary and the archive
START=$(date +%s)
DEADLINE=$((START + BUDGET))
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
WORK=$(mktemp -d /tmp/gpu-sh.XXXXXX)
R=$WORK/results       # every stage's files, flat; archived at the end
BENCH=$WORK/bench     # a copy of benchmarks/: its scripts write results/ and scratch beside themselves
mkdir -p "$R" "$BENCH"
cp benchmarks/*.py "$BENCH/"
exec > >(tee -a "$OUTDIR/gpu.log") 2>&1

if [[ $DEVICE == cpu ]]; then
    SUF=_dry
    N=2 SECONDS_EACH=11
    LIMIT=(--device cpu --models encodec_48khz --backends torch --batch-seconds 1 --repeats 1)
    SWEEP=(--device cpu --models encodec_48khz --backends torch --max-call-seconds 2 --min-time 0.1)
    STUDY=(--device cpu --fragments 10 --rounds 1 --extract torch --serve torch --concurrency 2
           --batch-seconds 16)
    HOST=(--fragments 10 --repeats 1)
else
    SUF=_cuda
    N=${GPU_SH_RECORDINGS:-96} SECONDS_EACH=61
    LIMIT=(--device "$DEVICE" --models encodec_48khz,encodec_24khz --batch-seconds 256 --repeats 3
           --backends torch,torch-bf16,torch-fp16)
    SWEEP=(--device "$DEVICE" --min-time 0.3 --backends torch,torch-bf16,torch-fp16)
    STUDY=(--device "$DEVICE" --fragments 10,60 --rounds 2 --extract torch,torch-fp16-w2
           --serve torch-fp16-w2 --concurrency 64 --batch-seconds 256)
    HOST=(--fragments 10,60 --repeats 2)
fi
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 SUF
echo "gpu.sh: device $DEVICE, budget ${BUDGET} s, stages $STAGES, kit $KIT, python $PY, results $OUTDIR (work $WORK)"

# ---- install: the kit's wheels into a fresh target, first on the path (its grpcio and protobuf
#      shadow the machine's); nothing else on the machine changes ----------------------------------
if [[ $KIT != none ]]; then
    if ! ls "$KIT"/*.whl >/dev/null 2>&1; then
        echo "gpu.sh: no wheels in $KIT: run 'bash scripts/gpu-kit.sh' here first and carry the folder" >&2
        exit 2
    fi
    if ! "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target "$WORK/site" "$KIT"/*.whl; then
        echo "gpu.sh: installing the kit failed" >&2
        exit 2
    fi
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
    export PATH=$WORK/site/bin:$PATH
fi
# The project's own code from this checkout, ahead of the kit's wheels of it (sonovec is a namespace
# package: each subpackage comes from the first folder that has it), so a fix made here runs on the
# next call without rebuilding the kit. sonovec.v1 (generated at the client's build; git-ignored, so
# it does not travel) still comes from the kit. GPU_SH_SOURCE=kit runs the kit's wheels instead.
if [[ ${GPU_SH_SOURCE:-tree} == tree ]]; then
    export PYTHONPATH=$REPO/models:$REPO/service:$REPO/client${PYTHONPATH:+:$PYTHONPATH}
fi
# pytest: only the plugins the project uses (the machine's own, e.g. xdist or benchmark, stay out)
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1

# ---- GPU sampling ------------------------------------------------------------------------------------
SMI_PID=
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    (
        echo "epoch_s,utilization_gpu_pct,utilization_memory_pct,memory_used_mib,memory_total_mib,power_w,sm_clock_mhz"
        while :; do
            line=$(nvidia-smi --query-gpu=utilization.gpu,utilization.memory,memory.used,memory.total,power.draw,clocks.sm \
                --format=csv,noheader,nounits -i 0 2>/dev/null | tr -d ' ')
            [[ -n $line ]] && echo "$(date +%s.%N),$line"
            sleep 0.5
        done
    ) >"$R/nvidia_smi$SUF.csv" &
    SMI_PID=$!
else
    echo "gpu.sh: no nvidia-smi here: no GPU sampling"
fi
trap '[[ -n $SMI_PID ]] && kill "$SMI_PID" 2>/dev/null' EXIT

# ---- stages ------------------------------------------------------------------------------------------
echo -e "stage\tstart\tend\trc\ttimeout_s" >"$R/stages.tsv"

# stage NAME MAX_SECONDS COMMAND...: runs COMMAND (in $R) under timeout, its output in NAME$SUF.log
stage() {
    local name=$1 max=$2 left t begin rc
    shift 2
    if [[ $name != env && ,$STAGES, != *,$name,* ]]; then
        return
    fi
    left=$((DEADLINE - $(date +%s) - RESERVE))
    if ((left < 15)); then
        echo "== $name: skipped, ${left} s of the budget left"
        echo -e "$name\t$(date +%s)\t$(date +%s)\tskipped\t0" >>"$R/stages.tsv"
        return
    fi
    t=$((max < left ? max : left))
    echo "== $name (timeout ${t} s) $(date -u +%H:%M:%S)"
    begin=$(date +%s.%N)
    (cd "$R" && timeout -k 10 "$t" "$@") >"$R/$name$SUF.log" 2>&1
    rc=$?
    echo -e "$name\t$begin\t$(date +%s.%N)\t$rc\t$t" >>"$R/stages.tsv"
    tail -n 25 "$R/$name$SUF.log"
    echo "== $name: rc $rc ($(( $(date +%s) - ${begin%.*} )) s)"
}

# collect FROM:TO...: move results/FROM.{json,png} of the copied benchmarks to $R/TO.{json,png}
collect() {
    local from to
    for pair in "$@"; do
        from=${pair%%:*} to=${pair##*:}
        for ext in json png; do
            [[ -f $BENCH/results/$from.$ext ]] && mv "$BENCH/results/$from.$ext" "$R/$to.$ext"
        done
    done
}

stage env 40 "$PY" - "$KIT" <<'EOF'
import json, os, platform, subprocess, sys
from importlib import metadata
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available(),
        "cores": len(os.sched_getaffinity(0)), "kit": sys.argv[1]}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                multiprocessors=p.multi_processor_count)
# The backend switches TF32 off through these (torch >= 2.9); a missing one is an error here.
for path in ("backends.cudnn.conv", "backends.cudnn.rnn", "backends.cuda.matmul"):
    obj = torch
    for part in path.split("."):
        obj = getattr(obj, part)
    info[f"torch.{path}.fp32_precision"] = getattr(obj, "fp32_precision", "MISSING")
for name in ("sonovec-server", "sonovec-models", "sonovec-client", "encodec", "numpy", "grpcio", "protobuf",
             "onnxruntime", "onnx", "fastapi", "pydantic", "faiss-cpu", "soundfile", "soxr", "pytest"):
    try:
        dist = metadata.distribution(name)
        info[f"version {name}"] = f"{dist.version} ({dist.locate_file('')})"
    except metadata.PackageNotFoundError:
        info[f"version {name}"] = None
# what the stages import: a kit missing a package fails here, by name
import faiss, redis, soundfile, soxr, sonovec.models.encodec_torch, sonovec.server.http.app  # noqa
import sonovec.client, sonovec.server.grpc.server, sonovec.v1.sonovec_pb2_grpc  # noqa
for module in (sonovec.models, sonovec.server, sonovec.client, sonovec.v1):
    info[f"code {module.__name__}"] = list(module.__path__)
check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
info["pip_check"] = check.stdout.strip().splitlines()
json.dump(info, open(f"env{os.environ.get('SUF', '')}.json", "w"), indent=1)
print(json.dumps(info, indent=1))
missing = [k for k, v in info.items() if v == "MISSING"]
sys.exit(f"missing in this torch: {missing}" if missing else 0)
EOF

stage tests 100 "$PY" -m pytest -q -s -m model "$REPO/tests/unit/models/test_cuda.py" --rootdir "$REPO" \
    -c "$REPO/pyproject.toml" -p no:cacheprovider -p pytest_asyncio.plugin -p pytest_timeout \
    --junitxml "$R/test_cuda$SUF.xml"

stage limit 80 "$PY" "$BENCH/limit.py" "${LIMIT[@]}" --name "limit$SUF"
collect "limit$SUF:limit$SUF"

left=$((DEADLINE - $(date +%s) - RESERVE))
sweep_budget=$(( (left < 100 ? left : 100) - 25 ))  # batch_sweep.py stops itself, leaving time to write
stage sweep 100 "$PY" "$BENCH/batch_sweep.py" "${SWEEP[@]}" --budget-s "$((sweep_budget > 10 ? sweep_budget : 10))" \
    --name "batch_sweep$SUF"
collect "batch_sweep$SUF:batch_sweep$SUF"

# The generated recordings, one process per core, named and made as common.make_corpus makes them
# (study_replay.py and host.py then find them in place).
stage corpus 60 "$PY" - "$BENCH" "$N" "$SECONDS_EACH" <<'EOF'
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, sys.argv[1])
import soundfile
from common import SCRATCH, piano_recording
count, seconds = int(sys.argv[2]), float(sys.argv[3])
folder = SCRATCH / f"corpus-{count}x{seconds:g}s"
folder.mkdir(parents=True, exist_ok=True)

def one(i: int) -> None:
    path = folder / f"recording_{i:04d}.flac"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        soundfile.write(tmp, piano_recording(seconds, 44_100, seed=i).T, 44_100, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)

started = time.perf_counter()
with ProcessPoolExecutor(os.cpu_count(), mp_context=multiprocessing.get_context("fork")) as pool:
    list(pool.map(one, range(count)))
print(f"{count} x {seconds:g} s recordings in {folder}: {time.perf_counter() - started:.1f} s")
EOF

stage study 150 "$PY" "$BENCH/study_replay.py" "${STUDY[@]}" --recordings "$N" --seconds "$SECONDS_EACH" \
    --name "study_replay$SUF"
collect "study_replay$SUF:study_replay$SUF"
for log in "$BENCH"/results/tmp/serve-*.log; do  # the served runs' server logs
    [[ -f $log ]] && cp "$log" "$R/study_$(basename "${log%.log}")$SUF.log"
done

stage host 50 "$PY" "$BENCH/host.py" "${HOST[@]}" --recordings "$N"
collect "host:host$SUF"

# ---- summary -----------------------------------------------------------------------------------------
[[ -n $SMI_PID ]] && kill "$SMI_PID" 2>/dev/null
SMI_PID=
timeout 30 "$PY" - "$R" "$SUF" "$BUDGET" <<'EOF'
import csv, json, re, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

results, suf, budget = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
stages = list(csv.DictReader(open(results / "stages.tsv"), delimiter="\t"))
smi = []
if (results / f"nvidia_smi{suf}.csv").exists():
    def number(text):  # nvidia-smi prints [N/A] for what a GPU does not report
        try:
            return float(text)
        except (TypeError, ValueError):
            return None

    for row in csv.DictReader(open(results / f"nvidia_smi{suf}.csv")):
        row = {k: number(v) for k, v in row.items()}
        if row.get("epoch_s") is not None:
            smi.append(row)
env = json.loads((results / f"env{suf}.json").read_text()) if (results / f"env{suf}.json").exists() else {}
tables = {"limit": f"limit{suf}", "sweep": f"batch_sweep{suf}", "study": f"study_replay{suf}", "host": f"host{suf}"}
lines = [f"# gpu.sh summary ({time.strftime('%Y-%m-%d %H:%M:%S %Z')})", "",
         f"GPU {env.get('gpu', 'none')} ({env.get('gpu_memory_gib', '-')} GiB), torch {env.get('torch')}, "
         f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, Python {env.get('python')}, "
         f"{env.get('cores')} cores; budget {budget} s. Weights: random-init.", "",
         "| stage | status | wall s | GPU util mean % | GPU util max % | GPU memory max MiB |", "|---|---|---|---|---|---|"]
out = {"env": env, "stages": []}
for s in stages:
    begin, end = float(s["start"]), float(s["end"])
    window = [r for r in smi if begin <= r["epoch_s"] <= end]
    rc = s["rc"]
    status = {"0": "ok", "124": "timed out", "137": "killed (timeout)", "skipped": "skipped (budget)"}.get(
        rc, f"failed (rc {rc})")
    util = [r["utilization_gpu_pct"] for r in window if r.get("utilization_gpu_pct") is not None]
    mem = [r["memory_used_mib"] for r in window if r.get("memory_used_mib") is not None]
    entry = {"stage": s["stage"], "status": status, "rc": rc, "wall_s": round(end - begin, 1),
             "gpu_util_mean": round(sum(util) / len(util), 1) if util else None,
             "gpu_util_max": max(util) if util else None, "gpu_memory_max_mib": max(mem) if mem else None}
    out["stages"].append(entry)
    lines.append("| " + " | ".join("-" if entry[k] is None else str(entry[k]) for k in
                                    ("stage", "status", "wall_s", "gpu_util_mean", "gpu_util_max",
                                     "gpu_memory_max_mib")) + " |")
junit = results / f"test_cuda{suf}.xml"
if junit.exists():
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        cases.append({"test": case.get("name"), "outcome": outcome,
                      "message": next((c.get("message", "")[:300] for c in case if c.tag != "system-out"), "")})
    figures = [ln for ln in (results / f"tests{suf}.log").read_text().splitlines()
               if re.search(r"vs cpu|pooled cosine|onnx cuda", ln)] if (results / f"tests{suf}.log").exists() else []
    (results / f"test_cuda{suf}.json").write_text(json.dumps({"cases": cases, "figures": figures}, indent=1))
    out["tests"] = {"cases": cases, "figures": figures}
    counts = {o: sum(c["outcome"] == o for c in cases) for o in ("passed", "failure", "error", "skipped")}
    lines += ["", "## tests (tests/unit/models/test_cuda.py)", "", ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    lines += [f"- {c['test']}: {c['outcome']} {c['message']}" for c in cases if c["outcome"] != "passed"]
    lines += ["", "```", *figures, "```"] if figures else []
ran = {s["stage"] for s in stages}
for stage, name in tables.items():
    if stage not in ran:
        continue
    path = results / f"{name}.json"
    if not path.exists():
        lines += ["", f"## {stage}: no results ({name}.json missing; see {stage}{suf}.log)"]
        continue
    data = json.loads(path.read_text())
    out[stage] = {k: data[k] for k in ("rows", "knees", "gemm_peak_gflops", "per_core_x_realtime") if k in data}
    lines += ["", f"## {stage} ({name}.json)", ""]
    if "gemm_peak_gflops" in data:
        lines += ["GEMM peaks GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in data["gemm_peak_gflops"].items()), ""]
    lines += [data.get("knee_table", ""), ""] if "knee_table" in data else []
    lines += [data.get("table") or f"(partial: {len(data.get('rows', []))} rows in {name}.json, no table)"]
(results / "summary.json").write_text(json.dumps(out, indent=1))
(results / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

# ---- what comes back: at most 8 files ----------------------------------------------------------------
cp "$R/summary.md" "$R/summary.json" "$OUTDIR/" 2>/dev/null
for name in "limit$SUF" "batch_sweep$SUF" "study_replay$SUF" "host$SUF"; do
    [[ -f $R/$name.png ]] && cp "$R/$name.png" "$OUTDIR/"
done
tar czf "$OUTDIR/gpu-results.tar.gz" -C "$R" .
echo "gpu.sh: done in $(( $(date +%s) - START )) s of ${BUDGET}; in $OUTDIR: $(ls "$OUTDIR" | tr '\n' ' ')"
echo "gpu.sh: tar xzf $OUTDIR/gpu-results.tar.gz -C benchmarks/results --wildcards '*$SUF.json' '*$SUF.png'"
rm -rf "$WORK"
