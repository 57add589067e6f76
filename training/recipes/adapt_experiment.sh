#!/usr/bin/env bash
# The controlled adaptation experiment (docs/adaptation.md): a shifted synthetic domain with
# labels, where the answer is known. Adaptation reads only its unlabelled training footage; the
# labelled test split of the same domain measures the gain; an oracle student trained on the
# target's labels bounds it.
#
#   training/recipes/adapt_experiment.sh                        # everything, seeds 0 and 1
#   STAGES="adapt" SOURCES="teacher agree" SEEDS=0 training/recipes/adapt_experiment.sh
#   DEVICE=cuda ITERS=2000 TEACHER_ITERS=1000 training/recipes/adapt_experiment.sh  # on a GPU
#
# Stages: data (the shifted domain: 4 training videos of 150 frames, 2 val and 12 test sequences
# of 24 frames, 256x512, generator seed 1), oracle (adapt/oracle.yaml: the shipped student
# fine-tuned on the target's labels with adaptation's budget, per seed), adapt (training.adapt
# from the shipped student and teacher, one run per pseudo-label source and seed), eval (one evaluate run per split over every model: the shifted
# test split, and the source's synthetic test split for forgetting).
set -euo pipefail

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/adapt_exp}
SHIFTED=${SHIFTED:-data/shifted}
SOURCE=${SOURCE:-data/synthetic}
DEVICE=${DEVICE:-cpu}
SEEDS=${SEEDS:-"0 1"}
SOURCES=${SOURCES:-"student teacher agree"}
ITERS=${ITERS:-300}
TEACHER_ITERS=${TEACHER_ITERS:-100}
TEACHER_SIZE=${TEACHER_SIZE:-"[128, 256]"}  # the teacher adapts at the student's size on a CPU
STAGES=${STAGES:-"data oracle adapt eval"}
RESULTS=${RESULTS:-docs/experiments/adaptation}
STUDENT=etc_ros/weights/student_etc.safetensors
BASELINE=etc_ros/weights/student_baseline.safetensors
TEACHER=etc_ros/weights/teacher.safetensors

has() { [[ " $STAGES " == *" $1 "* ]]; }
mkdir -p "$OUT/export" "$RESULTS"

if has data && [ ! -f "$SHIFTED/synthetic.json" ]; then
    $PY -m training.synthetic --out "$SHIFTED" --domain shifted --train 0 --val 2 --test 12 \
        --frames 24 --height 256 --width 512 --seed 1 --workers 2
    mv "$SHIFTED/synthetic.json" "$SHIFTED/synthetic_eval.json"
    $PY -m training.synthetic --out "$SHIFTED" --domain shifted --train 4 --val 0 --test 0 \
        --frames 150 --height 256 --width 512 --seed 1 --workers 2
fi

if has oracle; then
    for s in $SEEDS; do
        run="$OUT/oracle_s$s"
        [ -f "$OUT/export/oracle_s$s.safetensors" ] && continue
        if [ ! -f "$run/.trained" ]; then
            resume=(); [ -f "$run/train_state.json" ] && resume=(--resume)
            $PY -m training.train --config training/configs/adapt/oracle.yaml \
                --data-root "$SHIFTED" --device "$DEVICE" --out "$run" --set seed="$s" \
                "${resume[@]}"
            touch "$run/.trained"
        fi
        $PY -m training.export --run "$run" --out "$OUT/export/oracle_s$s.safetensors" \
            --name student_oracle_shifted
    done
fi

FOOTAGE=()
for seq in "$SHIFTED"/train/*/; do FOOTAGE+=(--images "${seq}images"); done

if has adapt; then
    for s in $SEEDS; do
        for src in $SOURCES; do
            run="$OUT/${src}_s$s"
            [ -f "$run/student_adapted.onnx" ] && continue
            resume=(); [ -d "$run/student" ] && resume=(--resume)
            # agree uses the same adapted teacher as the teacher run of its seed (same phase)
            if [ "$src" = agree ] && [ -f "$OUT/teacher_s$s/teacher/result.json" ] \
                    && [ ! -d "$run/teacher" ]; then
                mkdir -p "$run" && cp -r "$OUT/teacher_s$s/teacher" "$run/teacher"
                sed -i "s#$OUT/teacher_s$s/teacher#$run/teacher#" "$run/teacher/result.json"
                resume=(--resume)
            fi
            $PY -m training.adapt "${FOOTAGE[@]}" --data-root "$SOURCE" --device "$DEVICE" \
                --out "$run" --set pseudo_source="$src" --set seed="$s" --set iters="$ITERS" \
                --set teacher_iters="$TEACHER_ITERS" --set teacher_size="$TEACHER_SIZE" \
                --eval-data-root "$SHIFTED" \
                --eval-split test "${resume[@]}"
            cp "$run/student_adapted.safetensors" "$OUT/export/adapted_${src}_s$s.safetensors"
        done
    done
fi

if has eval; then
    models=(--model "$BASELINE" --model "$STUDENT")
    for f in "$OUT"/export/oracle_s*.safetensors "$OUT"/export/adapted_*_s*.safetensors; do
        [ -f "$f" ] && models+=(--model "$f")
    done
    EVAL="$PY -m etc_ros.evaluate --device $DEVICE"
    $EVAL --dataset "$SHIFTED" --split test "${models[@]}" --json "$RESULTS/shifted_test.json"
    $EVAL --dataset "$SOURCE" --split test "${models[@]}" --json "$RESULTS/synthetic_test.json"
fi
