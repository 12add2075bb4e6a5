#!/usr/bin/env bash
# Issue 14 on the lent GPU machine (device tool): the MPNet teacher candidates, then the MiniLM student ablation
# (plain / +asl / +label smoothing / +distillation / +distillation with extra texts), all on one CUDA card.
#
# What it needs in the working tree (gitignored .carry/, under the 64 MiB a call may carry):
#   .carry/whl, .carry/pkg.tar.xz   from bench/gpu/pack.sh (the pure-Python wheels and the MiniLM base in bf16)
#   .carry/goemotions               the GoEmotions TSV folder (../shared/data/goemotions)
#   .carry/xed/xed-en-adaptation-half.txt   texts only of XED English's adaptation half (bench/calibration.py's
#                                   split): the held-out half stays unseen, so issue 13's figures stay honest
#   /tmp/mpchunks/mpnet.part.*      all-mpnet-base-v2 (bf16 safetensors, tar.xz, split in three): too big for one
#                                   call, so earlier calls each carry one part and move it there
# Training upcasts both bases to fp32 master weights (trainer.modeling.load_base), so a bf16 copy of the base
# costs only the bf16 rounding of the frozen weights.
#
# Preparing them here (stop 11's commands): bench/gpu/pack.sh; cp ../shared/data/goemotions/* .carry/goemotions/;
# the XED half: bench/calibration.py's read_xed_english() texts at np.random.default_rng(SPLIT_SEED).permutation(n)[:n//2],
# one per line; the MPNet parts: the cached all-mpnet-base-v2 folder with model.safetensors cast to bf16,
# `tar cf - all-mpnet-base-v2 | xz -T2 -6 > mpnet.tar.xz; split -n 3 -d mpnet.tar.xz .carry/mpN/mpnet.part.`
# (one part per folder .carry/mp1..mp3). Then one device call per part (carry .carry/mpN, command
# `mkdir -p /tmp/mpchunks && cp .carry/mpN/* /tmp/mpchunks/`), back to back (the machine is given back 30 s after a
# call), and last this script (carry .carry/whl .carry/pkg.tar.xz .carry/goemotions .carry/xed).
#
# Teachers and the three students that need no teacher run side by side (the card is mostly idle with one small
# job); the distillation students start once the teacher with the best dev macro-F1 is known. Results: $OUT.
set -uo pipefail
out=${OUT:-/tmp/family-out}
site=/tmp/site
work=${FAMILY_WORK:-/tmp/family}
res=$work/results
mkdir -p "$out" "$res"
start=$(date +%s)
elapsed() { echo "[+$(( $(date +%s) - start ))s] $*"; }
# The device tool stops a call at 600 s; each phase gets what is left of TOTAL_SECONDS, keeping time to pack.
left() { echo $(( ${TOTAL_SECONDS:-580} - ($(date +%s) - start) - 25 )); }

if [ -z "${SKIP_SETUP:-}" ]; then  # SKIP_SETUP=1: a dry run here, in the project venv, on a tiny budget
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    .carry/whl/*.whl || exit 1
  tar xJf .carry/pkg.tar.xz -C "$site"
  mkdir -p /tmp/emcache/bases
  cat /tmp/mpchunks/mpnet.part.* | md5sum
  cat /tmp/mpchunks/mpnet.part.* | xz -dc -T0 | tar xf - -C /tmp/emcache/bases || exit 1
  export PYTHONPATH="$PWD:$site" PYTHONUNBUFFERED=1 EM_CACHE_DIR=/tmp/emcache EM_TRAIN_DATA="$PWD/.carry/goemotions" \
    TOKENIZERS_PARALLELISM=false
  bin=$(dirname "$(command -v python3)")
  printf '#!%s\nfrom emotion_monitor.cli import main\nif __name__ == "__main__":\n    main()\n' "$bin/python3" \
    > "$bin/emotion-monitor" && chmod +x "$bin/emotion-monitor"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$res/gpu-info.txt"
  python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', \
  transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$res/gpu-info.txt"
fi
elapsed "setup done"

teacher() {  # name, extra flags...: bench/train_teacher.sh's recipe (LoRA r16 on q,k,v,o,dense, mean pooling)
  local name=$1; shift
  timeout "${TEACHER_TIMEOUT:-420}" emotion-monitor train --base-model all-mpnet-base-v2 --pooling mean \
    --lora-target-modules q,k,v,o,dense --lora-r 16 --lora-alpha 32 --threads 3 --undersample-ratio 1.0 \
    --label-weights sqrt_inverse --lr 5e-4 --batch-size 32 --max-length 128 --seed 42 --checkpoint-every 100000 \
    --log-every 200 --name emotion-mpnet-lora --output "$work/$name" --quiet "$@" ${DRY_TEACHER_FLAGS:-} >"$res/$name.log" 2>&1
  elapsed "$name rc=$?"
}
student() {  # row, extra flags...: the shipped MiniLM recipe's budget (2 epochs of the undersampled split)
  local row=$1 tag=sa_${1//+/}; shift
  timeout "${STUDENT_TIMEOUT:-$(left)}" python3 bench/student_ablation.py --rows "$row" --tag "$tag" --out "$res" \
    --work-dir "$work/$tag" --train-limit 0 --steps 2084 --threads 2 --time-bases '' --quiet "$@" ${DRY_STUDENT_FLAGS:-} \
    >"$res/$tag.log" 2>&1
  elapsed "$row rc=$?"
}

# Stop 11 (H200, six jobs sharing the card): the 3-epoch teachers logged ~11 steps/s and reached step 2800 of 3126 in
# 270 s, so they need ~300 s plus the evaluation; a 2-epoch bce teacher (warm-up over 208 steps) collapsed to a flat
# loss (bench/results/student_ablation_gpu.md). TEACHERS and FIRST_STUDENTS choose what runs (FIRST_STUDENTS='' once
# those rows are measured).
for spec in ${TEACHERS:-bce-3ep:bce:3 asl-3ep:asl:3}; do
  IFS=: read -r name loss epochs <<<"$spec"
  teacher "teacher-$name" --loss "$loss" --epochs "$epochs" &
done
for row in ${FIRST_STUDENTS-plain +asl +label_smoothing}; do
  student "$row" &
done
wait
best=$(python3 - "$work" <<'PY'
import json, sys
from pathlib import Path
scores = {}
for folder in Path(sys.argv[1]).glob("teacher-*"):
    metrics = folder / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        scores[folder] = m["dev"]["macro_f1_tuned"]
        print(folder.name, "dev", m["dev"]["macro_f1_tuned"], "test", m["test"]["macro_f1_tuned"], file=sys.stderr)
print(max(scores, key=scores.get) if scores else "")
PY
)
elapsed "best teacher on dev: ${best:-none}"
if [ -n "$best" ] && [ "$(left)" -gt 90 ]; then
  kd=(--teacher "$best")
  student +distillation "${kd[@]}" &
  student +distillation+extra_texts "${kd[@]}" --extra-texts "$PWD/.carry/xed/xed-en-adaptation-half.txt" &
  wait
fi
# seconds per epoch of each base with the card to itself (the runs above shared it)
[ "$(left)" -gt 40 ] && timeout "$(left)" python3 bench/student_ablation.py --rows plain --tag timing --out "$work/timing" --work-dir "$work/timing" \
  --train-limit 64 --steps 1 --eval-limit 16 --threads 8 --time-bases all-MiniLM-L6-v2,all-mpnet-base-v2 \
  --time-steps 60 --quiet >"$res/timing.log" 2>&1 && cp "$work/timing/timing_bases.json" "$res/bases_gpu.json"
elapsed "timing done"
for t in "$work"/teacher-*; do
  [ -f "$t/config.json" ] && tar cJf "$out/$(basename "$t").tar.xz" -C "$work" --exclude='*.checkpoint' "$(basename "$t")"
done
tar cJf "$out/students.tar.xz" -C "$work" --exclude='*.checkpoint' --exclude='time_*' $(cd "$work" && ls -d sa_*)
tar cJf "$out/results.tar.xz" -C "$work" results
ls -la "$out"
elapsed "all done"
