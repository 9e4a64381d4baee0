#!/usr/bin/env bash
# The CUDA check, run on a lent GPU machine (no package index, no model hub) from the repo root:
#   prepare here:  .venv/bin/python scripts/tools/gpu_check_prepare.py   (.devdata/ and .whl/)
#   run there:     OUT=<folder> bash scripts/tools/gpu_check.sh          (carry .devdata and .whl;
#                  .devdata/cpu_ref, the CPU reference run, can stay behind)
# Each step has its own time limit and log, so one failure does not hide the others; $OUT gets
# logs.txt (all logs), runs.json (every run's metrics and log.csv) and the two benchmark tables.
# STEPS selects steps (default all); SKIP_INSTALL=1 uses the current environment as it is.
set -u
WORK=$(mktemp -d)  # logs, the installed wheels and the runs
OUT=${OUT:-$WORK/out}
STEPS=${STEPS:-"tests eval train finetune torchrun losses"}
mkdir -p "$OUT"
LOGS=$WORK/logs
mkdir -p $LOGS
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .whl/*.whl || exit 1
fi
export PYTHONPATH=$WORK/site:$PWD PYTHONUNBUFFERED=1 LANGDML_CACHE=$PWD/.devdata/cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, faiss, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda,
  'faiss', faiss.__version__, 'timm', timm.__version__)"
CFG=.devdata/gpu_check.yaml
RUNS=$WORK/runs
declare -A RC

step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  echo "=== $name (limit ${secs}s): $*"
  local t0=$SECONDS
  timeout "$secs" "$@" >"$LOGS/$name.log" 2>&1
  RC[$name]=$?
  echo "    rc=${RC[$name]} in $((SECONDS - t0)) s; tail:"
  tail -n 4 "$LOGS/$name.log" | cut -c1-300
  { echo "##### $name rc=${RC[$name]}"; cat "$LOGS/$name.log"; } >>"$OUT/logs.txt"
}

step tests 80 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cuda.py tests/eval/test_metrics.py \
  tests/eval/test_torch_backend.py tests/eval/test_metrics_inputs.py
step eval 180 python3 scripts/benchmarks/bench_eval.py --device cuda --out "$OUT/bench_eval_gpu.md"
step train 80 python3 -m langdml train $CFG --output-dir $RUNS/frozen_amp train.device=cuda \
  train.amp=true
FT="train.device=cuda model.frozen_trunk=false train.epochs=4 eval.every=2"
step finetune 150 bash -c "python3 -m langdml train $CFG --output-dir $RUNS/ft_amp $FT \
  train.amp=true && python3 -m langdml train $CFG --output-dir $RUNS/ft_fp32 $FT train.amp=false \
  && python3 -m langdml train $CFG --output-dir $RUNS/ft_fp16 $FT train.amp=true \
  train.amp_dtype=float16"
step torchrun 70 torchrun --standalone --nproc_per_node 1 -m langdml train $CFG \
  --output-dir $RUNS/torchrun train.device=cuda train.amp=true train.epochs=10
step losses 90 python3 scripts/benchmarks/bench_losses.py --devices cuda --out "$OUT/bench_losses_cuda.md"

# metrics of every run, one JSON file back
python3 - "$RUNS" "$OUT/runs.json" <<'PY'
import json, sys
from pathlib import Path
out = {}
for m in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    d = json.loads(m.read_text())
    out[m.parent.name] = {k: d.get(k) for k in ("baselines", "best", "final", "epochs")}
    log = m.parent / "log.csv"
    out[m.parent.name]["log_csv"] = log.read_text() if log.exists() else None
Path(sys.argv[2]).write_text(json.dumps(out, indent=1))
for name, d in out.items():  # the numbers docs/guides/gpu_check.md quotes, in %
    f, u = d["final"], (d["baselines"] or {}).get("untrained", {})
    print(f"run {name}: epochs {d['epochs']}, untrained R@1 {100 * u.get('recall@1', float('nan')):.2f}, "
          f"final R@1 {100 * f['recall@1']:.2f} MAP@R {100 * f['map@r']:.2f} NMI {100 * f['nmi']:.2f}")
PY
echo "=== summary"
for k in "${!RC[@]}"; do echo "$k rc=${RC[$k]}"; done
