#!/usr/bin/env bash
# Adaptation on real footage: OpenCV's vtest.avi (`make real-data`), a fixed camera over a
# campus path. The real set labels its frames 0 and 400 (hand-drawn regions), so adaptation
# never reads frames 0-50 and 350-450, nor the held-out stretch 700-794 that TC is measured on.
#
#   training/recipes/adapt_vtest.sh                    # seeds 0 and 1, then evaluate
#   STAGES=eval training/recipes/adapt_vtest.sh        # only the evaluation
#
# Evaluate runs (one per comparison, every model in each): the held-out labelled vtest frames,
# the six photos never adapted on (forgetting), TC on frames 700-794, the first 96 frames of the
# synthetic test split (forgetting). Seed 0's student ships as
# etc_ros/weights/student_etc_vtest.safetensors (`make adapt-ship`; no picking of the better seed).
set -euo pipefail

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/adapt_vtest}
REAL=${REAL:-data/real}
SOURCE=${SOURCE:-data/synthetic}
EVAL_ROOT=${EVAL_ROOT:-data/real_eval}
DEVICE=${DEVICE:-cpu}
SEEDS=${SEEDS:-"0 1"}
SETS=${SETS:-}
STAGES=${STAGES:-"adapt eval"}
RESULTS=${RESULTS:-docs/experiments/adaptation}
EXCLUDE=0-50,350-450,700-

has() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p "$OUT" "$RESULTS"

# the real set split by what adaptation saw: its camera's frames, and six other photos; the
# frames TC is measured on
$PY - "$REAL" "$EVAL_ROOT" <<'EOF'
import sys
from pathlib import Path

import cv2

real, root = Path(sys.argv[1]), Path(sys.argv[2])
for seq in sorted((real / "test").iterdir()):
    group = "vtest" if seq.name.startswith("vtest") else "photos"
    link = root / group / "test" / seq.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(seq.resolve())
tc = root / "vtest_tc"
tc.mkdir(parents=True, exist_ok=True)
cap = cv2.VideoCapture(str(real / "vtest.avi"))
index = 0
while True:
    ok, bgr = cap.read()
    if not ok:
        break
    if index >= 700 and not (tc / f"{index:06d}.png").exists():
        cv2.imwrite(str(tc / f"{index:06d}.png"), bgr)
    index += 1
EOF

if has adapt; then
    for s in $SEEDS; do
        run="$OUT/student_s$s"
        [ -f "$run/student_adapted.onnx" ] && continue
        resume=(); [ -d "$run/student" ] && resume=(--resume)
        # shellcheck disable=SC2086
        $PY -m training.adapt --video "$REAL/vtest.avi" --exclude "$EXCLUDE" \
            --data-root "$SOURCE" --device "$DEVICE" --out "$run" --set seed="$s" $SETS \
            --eval-data-root "$EVAL_ROOT/vtest" --eval-split test "${resume[@]}"
    done
fi

if has eval; then
    models=(--model etc_ros/weights/student_baseline.safetensors
            --model etc_ros/weights/student_etc.safetensors)
    for s in $SEEDS; do
        f="$OUT/student_s$s/student_adapted.safetensors"
        if [ -f "$f" ]; then
            cp "$f" "$OUT/student_etc_vtest_s$s.safetensors"
            models+=(--model "$OUT/student_etc_vtest_s$s.safetensors")
        fi
    done
    EVAL="$PY -m etc_ros.evaluate --device $DEVICE"
    $EVAL --dataset "$EVAL_ROOT/vtest" --split test "${models[@]}" \
        --json "$RESULTS/vtest_labelled.json"
    $EVAL --dataset "$EVAL_ROOT/photos" --split test "${models[@]}" \
        --json "$RESULTS/vtest_photos.json"
    $EVAL --images "$EVAL_ROOT/vtest_tc" "${models[@]}" --json "$RESULTS/vtest_tc.json"
    # forgetting: the source's test split (its first 96 frames), with the controlled
    # experiment's models when training/recipes/adapt_experiment.sh has made them
    for f in runs/adapt_exp/export/oracle_s*.safetensors \
             runs/adapt_exp/export/adapted_student_s*.safetensors; do
        [ -f "$f" ] && models+=(--model "$f")
    done
    $EVAL --dataset "$SOURCE" --split test --max-frames 96 "${models[@]}" \
        --json "$RESULTS/synthetic_test_forgetting.json"
fi
