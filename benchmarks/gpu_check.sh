#!/usr/bin/env bash
# GPU check, prepared for a lent CUDA machine; finishes in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh [--smoke] [OUT_DIR]
#
# Runs, from the repository root, with random weights (nothing is downloaded):
#   1. bench_train.py for RN50 and ViT-B/16 at batch 64 on synthetic 224 px data (bf16 autocast);
#   2. `hpo run --backbone vitb16 --trials 3 --epochs 2` (pretrained=none) on the 11k sample if
#      it is at $HANDREID_DATA or ../shared/data/11k-mini-100px, else on generated synthetic data;
#   3. with the time left: ViT-B/16 in fp32, tests/test_speed.py (its CUDA tests and the
#      torch.compile comparison) and ViT-B/16 with --compile.
# and prints one compact table. Results (JSON, logs, the study journal) go to OUT_DIR
# (default: $OUT if set, else a new temporary folder). Needs the repository's requirements
# (`pip install -e .`) in $PYTHON, ./.venv, ./venv or python3. --smoke runs the tiny towers
# instead, on any device, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
OUT_DIR=${1:-${OUT:-$(mktemp -d -t gpu-check.XXXXXX)}}
mkdir -p "$OUT_DIR"
BUDGET_S=${GPU_CHECK_BUDGET_S:-450}
START=$(date +%s)

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in .venv/bin/python venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1

if ! "$PY" -c "import torch, open_clip, optuna, yaml, plotly" 2>"$OUT_DIR/import_error.txt"; then
  echo "error: $PY lacks the repository's requirements ($(tail -n 1 "$OUT_DIR/import_error.txt")); run: $PY -m pip install -e ." >&2
  exit 2
fi
HAS_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
if [ "$HAS_CUDA" != 1 ] && [ "$SMOKE" != 1 ]; then
  echo "error: no CUDA device visible to torch; this check is for a GPU machine (--smoke checks the script)" >&2
  exit 2
fi

"$PY" - <<'EOF' | tee "$OUT_DIR/machine.txt"
import platform, time, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"date {time.strftime('%Y-%m-%d %H:%M')}; {gpu}; torch {torch.__version__}; "
      f"CUDA {torch.version.cuda}; Python {platform.python_version()}")
EOF

# step NAME LIMIT_S COMMAND...: run with a timeout that never passes the overall budget
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  if [ "$left" -lt 30 ]; then
    echo "skipped $name: budget spent" | tee "$OUT_DIR/$name.log"; return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit}s)"
  local t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 4 "$OUT_DIR/$name.log"
  echo "   $name: exit $rc after $(( $(date +%s) - t0 ))s"
  echo "$rc" >"$OUT_DIR/$name.rc"
}

if [ "$SMOKE" = 1 ]; then
  RN=tiny-rn; VIT=tiny-vit; BATCH=32; BACKBONE=tiny-vit; HPO_SET=()
else
  RN=rn50; VIT=vitb16; BATCH=64; BACKBONE=vitb16; HPO_SET=(--set pretrained=none)
fi
DATA=${HANDREID_DATA:-../shared/data/11k-mini-100px}
[ -f "$DATA/HandInfo.csv" ] || DATA=synthetic

BENCH=("$PY" benchmarks/bench_train.py --batch-size "$BATCH")
[ "$SMOKE" = 1 ] && BENCH+=(--threads 1)
step train_rn 120 "${BENCH[@]}" --model "$RN" --json "$OUT_DIR/train_rn.json"
step train_vit 120 "${BENCH[@]}" --model "$VIT" --json "$OUT_DIR/train_vit.json"
rm -f "$OUT_DIR/hpo.journal"
step hpo 180 "$PY" -m hpo.cli run --backbone "$BACKBONE" --trials 3 --epochs 2 --data "$DATA" \
  "${HPO_SET[@]}" --storage "$OUT_DIR/hpo.journal" --study gpu-check --seed 0 --quiet
step train_vit_fp32 90 "${BENCH[@]}" --model "$VIT" --no-amp --json "$OUT_DIR/train_vit_fp32.json"
step test_speed 150 env HANDREID_TEST_COMPILE=$((1 - SMOKE)) "$PY" -m pytest tests/test_speed.py -q -p no:cacheprovider
[ "$SMOKE" = 1 ] || step train_vit_compile 150 "${BENCH[@]}" --model "$VIT" --compile --json "$OUT_DIR/train_vit_compile.json"

"$PY" - "$OUT_DIR" "$DATA" <<'EOF' | tee "$OUT_DIR/summary.txt"
import json, sys
from pathlib import Path

out, data = Path(sys.argv[1]), sys.argv[2]
print()
print(f"{'run':<20}{'train img/s':>12}{'eval img/s':>12}{'ms/epoch':>10}{'epoch+val ms':>14}{'peak MiB':>10}")
vit = None
for name in ("train_rn", "train_vit", "train_vit_fp32", "train_vit_compile"):
    f = out / f"{name}.json"
    if not f.is_file():
        rc = out / f"{name}.rc"
        why = f"exit {rc.read_text().strip()}; see {name}.log" if rc.is_file() else "not run"
        print(f"{name:<20}  no result ({why})")
        continue
    r = json.loads(f.read_text())
    vit = r if name == "train_vit" else vit
    label = f"{r['model']} b{r['batch_size']} {'bf16' if r['amp'] else 'fp32'}{' compiled' if r['compile'] else ''}"
    print(f"{label:<20}{r['train_images_per_s']:>12.1f}{r['eval_images_per_s']:>12.1f}"
          f"{r['train_ms_per_epoch']:>10.0f}{r['epoch_plus_val_ms']:>14.0f}{r['peak_memory_mb']:>10.0f}")
print("(epoch: 890 training images; validation: 1,042 images; the old trainer needed 37 s + 31 s)")
journal = out / "hpo.journal"
if journal.is_file():
    import optuna
    from hpo.common.attrs import attrs_of
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="gpu-check", storage=JournalStorage(JournalFileBackend(str(journal))))
    print(f"\nhpo run, 3 trials x 2 epochs on {data}:")
    print(f"{'trial':<7}{'state':<10}{'epochs':>7}{'seconds':>9}{'s/epoch':>9}{'peak MiB':>10}{'val mAP':>9}")
    for t in study.trials:
        a = attrs_of(t)  # bookkeeping (seconds, memory, epochs) lives in system attributes
        epochs = a.get("epochs_run", 0) or 0
        secs = a.get("seconds", float("nan"))
        per = secs / epochs if epochs else float("nan")
        value = f"{t.value:.4f}" if t.value is not None else "-"
        print(f"{t.number:<7}{t.state.name:<10}{epochs:>7}{secs:>9.1f}{per:>9.2f}"
              f"{a.get('peak_memory_mb', float('nan')):>10.0f}{value:>9}")
else:
    print("\nhpo run: no study (see hpo.log)")
tests = out / "test_speed.log"
if tests.is_file():
    lines = [l for l in tests.read_text().splitlines() if l.strip()]
    print(f"\ntests/test_speed.py: {lines[-1] if lines else 'no output'}")
if vit is not None and vit["model"] == "vitb16":
    ok = lambda b: "reached" if b else "NOT reached"
    print(f"\ntarget ViT-B/16 training >= 1500 images/s: {vit['train_images_per_s']:.0f} ({ok(vit['train_images_per_s'] >= 1500)})")
    print(f"target epoch + validation < 3 s: {vit['epoch_plus_val_ms'] / 1000:.2f} s ({ok(vit['epoch_plus_val_ms'] < 3000)})")
EOF
echo "total $(( $(date +%s) - START ))s; files in $OUT_DIR"
vit_json="$OUT_DIR/train_vit.json"
if [ -f "$vit_json" ]; then
  "$PY" -c "import json,sys; print('vit_train_images_per_s=%.1f' % json.load(open(sys.argv[1]))['train_images_per_s'])" "$vit_json"
else
  echo "vit_train_images_per_s=nan"
fi
