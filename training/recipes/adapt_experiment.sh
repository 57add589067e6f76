#!/usr/bin/env bash
# The controlled adaptation experiment (docs/adaptation.md): a shifted synthetic domain with
# labels, where the answer is known. Adaptation reads only its unlabelled training footage; the
# labelled test split of the same domain measures the gain; an oracle student trained on the
# target's labels bounds it.
#
#   training/recipes/adapt_experiment.sh                        # everything, seeds 0 and 1
#   STAGES="ablation eval" training/recipes/adapt_experiment.sh    # pseudo-label sources only
#   DEVICE=cuda ITERS=2000 TEACHER_ITERS=1000 training/recipes/adapt_experiment.sh  # on a GPU
#
# Stages: data (the shifted domain: 4 training videos of 150 frames, 2 val and 12 test sequences
# of 24 frames, 256x512, generator seed 1), oracle (adapt/oracle.yaml: the shipped student
# fine-tuned on the target's labels with adaptation's budget, per seed), adapt (training.adapt
# from the shipped student, the default method, per seed), ablation (the pseudo-label sources
# and a near-frozen labeller, 100 steps, seed 0), eval (one evaluate run per split: the shifted
# val split for the ablation, the shifted test split for every model). Forgetting on the
# source's test split is measured with the vtest models by training/recipes/adapt_vtest.sh.
set -euo pipefail

PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/adapt_exp}
SHIFTED=${SHIFTED:-data/shifted}
SOURCE=${SOURCE:-data/synthetic}
DEVICE=${DEVICE:-cpu}
SEEDS=${SEEDS:-"0 1"}
ITERS=${ITERS:-300}
TEACHER_ITERS=${TEACHER_ITERS:-100}
TEACHER_SIZE=${TEACHER_SIZE:-"[128, 256]"}  # the teacher adapts at the student's size on a CPU
STAGES=${STAGES:-"data oracle adapt ablation eval"}
ABLATION_ITERS=${ABLATION_ITERS:-100}
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

# adapt RUN SEED ITERS [--set ...]: one training.adapt run from the shipped student
adapt() {
    local run=$1 seed=$2 iters=$3; shift 3
    [ -f "$run/student_adapted.onnx" ] && return 0
    local resume=(); [ -d "$run/student" ] && resume=(--resume)
    $PY -m training.adapt "${FOOTAGE[@]}" --data-root "$SOURCE" --device "$DEVICE" \
        --out "$run" --set seed="$seed" --set iters="$iters" \
        --set teacher_iters="$TEACHER_ITERS" --set teacher_size="$TEACHER_SIZE" \
        --eval-data-root "$SHIFTED" --eval-split test "$@" "${resume[@]}"
}

if has adapt; then  # the default method, every seed
    for s in $SEEDS; do
        adapt "$OUT/student_s$s" "$s" "$ITERS"
        cp "$OUT/student_s$s/student_adapted.safetensors" "$OUT/export/adapted_student_s$s.safetensors"
    done
fi

if has ablation; then  # pseudo-label sources at a third of the budget, seed 0
    A="$OUT/ablation"
    adapt "$A/student_s0" 0 "$ABLATION_ITERS" --set pseudo_source=student
    adapt "$A/teacher_s0" 0 "$ABLATION_ITERS" --set pseudo_source=teacher
    # agree adapts the same teacher (same seed, same phase): reuse it
    if [ ! -d "$A/agree_s0/teacher" ]; then
        mkdir -p "$A/agree_s0" && cp -r "$A/teacher_s0/teacher" "$A/agree_s0/teacher"
        sed -i "s#$A/teacher_s0/teacher#$A/agree_s0/teacher#" "$A/agree_s0/teacher/result.json"
    fi
    adapt "$A/agree_s0" 0 "$ABLATION_ITERS" --set pseudo_source=agree --resume
    adapt "$A/student_slow_s0" 0 "$ABLATION_ITERS" --set pseudo_source=student \
        --set lr=0.0005 --set ema_decay=0.999
    for v in student teacher agree student_slow; do
        cp "$A/${v}_s0/student_adapted.safetensors" "$A/ablation_${v}_s0.safetensors"
    done
fi

if has eval; then
    main=(--model "$BASELINE" --model "$STUDENT")
    for f in "$OUT"/export/oracle_s*.safetensors "$OUT"/export/adapted_*_s*.safetensors; do
        [ -f "$f" ] && main+=(--model "$f")
    done
    ablation=()
    for f in "$OUT"/ablation/ablation_*_s0.safetensors; do
        [ -f "$f" ] && ablation+=(--model "$f")
    done
    EVAL="$PY -m etc_ros.evaluate --device $DEVICE"
    $EVAL --dataset "$SHIFTED" --split val --model "$STUDENT" "${ablation[@]}" \
        --json "$RESULTS/ablation_shifted_val.json"
    $EVAL --dataset "$SHIFTED" --split test "${main[@]}" "${ablation[@]}" \
        --json "$RESULTS/shifted_test.json"
fi
