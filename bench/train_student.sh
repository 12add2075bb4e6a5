#!/usr/bin/env bash
# Train the distilled MiniLM student (issue 14) on CPU: the shipped CPU default's recipe (asymmetric loss,
# sqrt-inverse positive weights, neutral undersampled to 1.0x, mean pooling, lr 5e-4, 2,084 steps = 2 epochs, seed 42)
# plus --teacher: the MPNet teacher of bench/train_teacher.sh labels every training text once (cached beside the
# checkpoint) and the student learns from its probabilities too (alpha 0.5, T 2). Then stage 2 (head retrained on the
# frozen encoder's real embeddings, as the shipped model), then thresholds for int8 (the CPU worker's precision) and
# the served evaluation. Candidates are compared with `python bench/student_select.py`.
#
# EXTRA_TEXTS=FILES (comma-separated; e.g. .carry/xed/xed-en-adaptation-half.txt, XED English's adaptation half,
# texts only) adds unlabelled texts that only the teacher term sees: the ablation's "+distillation+extra_texts" row,
# into runs/minilm-asl-distilled-extra*. The teacher's pass over the training texts is cached apart from the extra
# texts' (copy teacher_proba_*.npy from a finished plain run's checkpoint folder to reuse it).
#
# DISTILL_TARGET=auto|raw|calibrated (default auto: the asl teacher's raw outputs for this asl student; stop 15's
# first run learnt its calibrated probabilities, which fight the asl loss, into runs/minilm-asl-distilled-calibrated).
#
# Rerunning this exact script resumes (checkpoint every 100 steps; keep every flag unchanged).
# Cost measured on the shared 2-core CPU: ~0.8 s/step for MiniLM, so ~28 min for stage 1 on an idle machine, plus
# the teacher's pass over the ~22k (undersampled) training texts.
#
# Run in the background:   nohup setsid bench/train_student.sh >/dev/null 2>&1 &
# Progress:                tail -f "$LOG"
set -euo pipefail

RUNS="${EM_RUNS_DIR:-$HOME/.cache/emotion-monitor/runs}"
TEACHER="${TEACHER:-$(cd "$(dirname "$0")/.." && pwd)/trainer/mpnet_model}"   # the shipped MPNet teacher
EXTRA="${EXTRA_TEXTS:-}"
TARGET="${DISTILL_TARGET:-auto}"
TAG=minilm-asl-distilled${EXTRA:+-extra}
[ "$TARGET" = auto ] || TAG="$TAG-$TARGET"
OUT="${STUDENT_OUT:-$RUNS/$TAG-stage1}"
OUT2="${STUDENT_STAGE2_OUT:-$RUNS/$TAG}"
LOG="${STUDENT_LOG:-$RUNS/$TAG.log}"
EM="${EMOTION_MONITOR:-emotion-monitor}"   # the CLI of the checkout to train with
NICE="${STUDENT_NICE:-10}"
mkdir -p "$RUNS"
[ -f "$TEACHER/config.json" ] || { echo "no teacher artifact at $TEACHER (run bench/train_teacher.sh)" >&2; exit 2; }

if [ ! -f "$OUT/config.json" ]; then
  echo "== $(date -u +%FT%TZ) stage 1 start/resume (teacher $TEACHER)" >>"$LOG"
  nice -n "$NICE" "$EM" train --max-steps 2084 --undersample-ratio 1.0 --loss asl --label-weights sqrt_inverse \
      --lr 5e-4 --batch-size 32 --pooling mean --seed 42 --threads 2 --teacher "$TEACHER" --distill-alpha 0.5 \
      --distill-temperature 2 --distill-target "$TARGET" ${EXTRA:+--distill-texts "$EXTRA"} \
      --checkpoint-every 100 --log-every 10 --name emotion-minilm-lora --output "$OUT" --quiet >>"$LOG" 2>&1
fi
if [ ! -f "$OUT2/config.json" ]; then
  echo "== $(date -u +%FT%TZ) stage 2 (head on real embeddings)" >>"$LOG"
  nice -n "$NICE" "$EM" train --stage2-from "$OUT" --stage2-method none --loss asl --label-weights sqrt_inverse \
      --threads 2 --name emotion-minilm-lora --output "$OUT2" --quiet >>"$LOG" 2>&1
fi
if [ ! -f "$OUT2/thresholds_int8.json" ]; then
  echo "== $(date -u +%FT%TZ) int8 thresholds" >>"$LOG"
  nice -n "$NICE" "$EM" tune-thresholds --model "$OUT2" --precision int8 >>"$LOG" 2>&1
fi
echo "== $(date -u +%FT%TZ) done: $OUT2" >>"$LOG"
