#!/usr/bin/env bash
# The synthetic ETC recipe on one GPU: synthetic streets, DIS flow cache, the teacher, then
# baseline / TL / ETC students for every seed, each exported in the node's weights format.
#
#   training/recipes/synthetic_gpu.sh                  # the whole recipe, seeds 0 and 1
#   CONFIGS=gpu/syn_ DATA_SIZE="512 1024" OUT=runs/gpu512 DATA=data/synthetic_gpu512 \
#       training/recipes/synthetic_gpu.sh              # students at 256x512, teacher 512x1024
#   DEVICE=cpu TRAIN_SEQS=2 ... training/recipes/synthetic_gpu.sh   # a smoke run
#   STAGES="data students" ...; then STAGES="etc export" ...   # in two sittings
#   TEACHER=etc_ros/weights/teacher.safetensors OUT=runs/gpu_kd1 \
#       ETC_SETS="loss_weights={ce: 1.0, temporal: 0.1, kd: 1.0, pf: 1.0, structured: 1.0, mf: 1.0}" \
#       training/recipes/synthetic_gpu.sh              # students only, a variant, the shipped teacher
#   TEACHER_CONFIG=teacher_lite2 ETC_SETS="teacher_arch=pspnet_effnet_lite2" OUT=runs/gpu_lite2 \
#       training/recipes/synthetic_gpu.sh              # a stronger teacher (EfficientNet-Lite2)
#
# The default run takes about 8 minutes on one H100 (the sum of its measured stages; README,
# "Training"). The 2x-input one took 7.4 minutes there with one seed and less training (SEEDS=0
# TRAIN_SEQS=32 TEACHER_ITERS=800 STUDENT_ITERS=400 VAL_EVERY=200); with two seeds and the
# defaults it did not finish in a 15-minute lease. STAGES picks which of its four stages run
# (data, students, etc, export), so a machine that limits one command's time can run it in two
# commands over the same folders.
#
# By default the CPU recipe's configs (training/configs/*.yaml: students 128x256, teacher
# 256x512, data at 256x512); CONFIGS=gpu/syn_ picks training/configs/gpu/syn_*.yaml (students
# 256x512, teacher 512x1024), whose data is generated at DATA_SIZE="512 1024". More training
# sequences and iterations, a larger student batch, and the teacher's targets with a flip.
# Small models leave a GPU mostly idle, so the teacher and the baseline/TL students of all seeds
# train side by side, then the ETC students (which need the teacher and, for the teacher gate,
# their seed's TL student) with more loader processes each. The val split is the CPU recipe's
# (the configs validate on its first 4 sequences); sequences are seeded per (split, index), so
# the CPU recipe's test split stays held out and `etc_ros.evaluate` can compare both recipes on
# it.
set -euo pipefail

PY=${PY:-python3}
OUT=${OUT:-runs/gpu}
DATA=${DATA:-data/synthetic_gpu}
DEVICE=${DEVICE:-cuda}
SEEDS=${SEEDS:-"0 1"}
TRAIN_SEQS=${TRAIN_SEQS:-64}
VAL_SEQS=${VAL_SEQS:-4}
FRAMES=${FRAMES:-24}
TEACHER_ITERS=${TEACHER_ITERS:-2000}
TEACHER_BATCH=${TEACHER_BATCH:-8}
STUDENT_ITERS=${STUDENT_ITERS:-1200}
STUDENT_BATCH=${STUDENT_BATCH:-16}
VAL_EVERY=${VAL_EVERY:-400}
CORES=$(getconf _NPROCESSORS_ONLN)   # not nproc: it follows OMP_NUM_THREADS
# Data-loader processes per run, shared out by what a training sample costs to load (TL clips
# cost 2.3x a single frame; ETC clips with teacher targets 3.7x): the teacher, the baselines and
# the TL students at once get 1 : 1 : 2.5 shares of the cores (16 cores, two seeds: 2, 2 and 5
# each; one seed: 3, 3 and 8), then the ETC students split them evenly.
at_least_1() { echo $(( $1 > 1 ? $1 : 1 )); }
NSEEDS=$(wc -w <<<"$SEEDS")
[ "$NSEEDS" -gt 0 ] || { echo "synthetic_gpu.sh: SEEDS is empty" >&2; exit 2; }
# TEACHER: an exported teacher (.safetensors) to distil from instead of training one; the
# students stage then trains no teacher and the export stage exports none.
TEACHER=${TEACHER:-}
# in half shares: teacher 2 (unless TEACHER is given), per seed baseline 2 + TL 5
TEACHER_HALF_SHARES=2
if [ -n "$TEACHER" ]; then TEACHER_HALF_SHARES=0; fi
HALF_SHARES=$(( TEACHER_HALF_SHARES + 7 * NSEEDS ))
TEACHER_WORKERS=${TEACHER_WORKERS:-$(at_least_1 $(( CORES * 2 / HALF_SHARES )))}
BASELINE_WORKERS=${BASELINE_WORKERS:-$(at_least_1 $(( CORES * 2 / HALF_SHARES )))}
TL_WORKERS=${TL_WORKERS:-$(at_least_1 $(( CORES * 5 / HALF_SHARES )))}
ETC_WORKERS=${ETC_WORKERS:-$(at_least_1 $(( CORES / NSEEDS - 1 )))}
TEACHER_SCALES=${TEACHER_SCALES:-"[1.0]"}
TEACHER_FLIP=${TEACHER_FLIP:-true}
STAGES=${STAGES:-"data students etc export"}
CONFIGS=${CONFIGS:-}                  # prefix of the config names under training/configs/
# the teacher's config name (after CONFIGS), e.g. teacher_lite2; a teacher of another
# architecture than the student configs' teacher_arch also needs ETC_SETS="teacher_arch=..."
TEACHER_CONFIG=${TEACHER_CONFIG:-teacher}
# Config overrides, `;`-separated KEY=VALUE items (YAML values, as `training.train --set`):
# STUDENT_SETS for every student (baseline, TL, ETC), ETC_SETS for the ETC students only.
IFS=';' read -r -a STUDENT_SET_ITEMS <<<"${STUDENT_SETS:-}"
IFS=';' read -r -a ETC_SET_ITEMS <<<"${ETC_SETS:-}"
as_sets() {  # as_sets ITEM...: NUL-separated `--set ITEM` pairs, blank items skipped
    local item
    for item in "$@"; do
        if [ -n "${item// }" ]; then printf -- '--set\0%s\0' "$item"; fi
    done
}
mapfile -d '' STUDENT_SET_ARGS < <(as_sets "${STUDENT_SET_ITEMS[@]}")
mapfile -d '' ETC_SET_ARGS < <(as_sets "${ETC_SET_ITEMS[@]}")
if [ -n "$TEACHER" ] && [ ! -f "$TEACHER" ]; then
    echo "synthetic_gpu.sh: TEACHER $TEACHER is not a file" >&2
    exit 2
fi
TEACHER_CKPT=${TEACHER:-$OUT/teacher/best.safetensors}
read -r DATA_H DATA_W <<<"${DATA_SIZE:-256 512}"
for st in $STAGES; do
    case $st in data|students|etc|export) ;;
        *) echo "synthetic_gpu.sh: unknown stage '$st' in STAGES (data students etc export)" >&2
           exit 2 ;;
    esac
done

mkdir -p "$OUT/export"
stamp() { echo "[$(date +%T)] $*"; }

train() {  # train NAME CONFIG SEED WORKERS [train.py args...]; log in $OUT/NAME.log
    local name=$1 cfg=$2 seed=$3 workers=$4
    shift 4
    "$PY" -m training.train --config "training/configs/$CONFIGS$cfg.yaml" --data-root "$DATA" \
        --device "$DEVICE" --out "$OUT/$name" --set "seed=$seed" --set "workers=$workers" \
        --set "val_every=$VAL_EVERY" "$@" >>"$OUT/$name.log" 2>&1
}

stage() {  # stage NAME: is NAME in STAGES?
    [[ " $STAGES " == *" $1 "* ]]
}

wait_all() {  # wait for every pid given; fail if any failed
    local failed=0
    for pid in "$@"; do wait "$pid" || failed=1; done
    return $failed
}

if stage data; then
    stamp "data: $TRAIN_SEQS train + $VAL_SEQS val sequences x $FRAMES frames at ${DATA_H}x$DATA_W"
    "$PY" -m training.synthetic --out "$DATA" --train "$TRAIN_SEQS" --val "$VAL_SEQS" --test 0 \
        --frames "$FRAMES" --height "$DATA_H" --width "$DATA_W" --seed 0 --workers "$CORES"
    "$PY" -m training.flow_cache --data-root "$DATA" --split train --max-offset 3 \
        --workers "$CORES"
fi

# every student's run: iterations, batch and the STUDENT_SETS overrides
student_args=(--max-iters "$STUDENT_ITERS" --batch-size "$STUDENT_BATCH" "${STUDENT_SET_ARGS[@]}")

if stage students; then
    pids=()
    if [ -z "$TEACHER" ]; then
        stamp "teacher + baseline and TL students (seeds: $SEEDS)"
        train teacher "$TEACHER_CONFIG" 0 "$TEACHER_WORKERS" --max-iters "$TEACHER_ITERS" \
            --batch-size "$TEACHER_BATCH" &
        pids+=($!)
    else
        stamp "baseline and TL students (seeds: $SEEDS; teacher: $TEACHER)"
    fi
    for s in $SEEDS; do
        train "student_baseline_s$s" student_baseline "$s" "$BASELINE_WORKERS" "${student_args[@]}" &
        pids+=($!)
        train "student_tl_s$s" student_tl "$s" "$TL_WORKERS" "${student_args[@]}" &
        pids+=($!)
    done
    wait_all "${pids[@]}"
fi

if stage etc; then
    stamp "ETC students"
    # One target cache per seed, built side by side so that neither seed waits for the other's:
    # on an H100 two such builds took 44 s each, one alone (three scales) 37 s.
    pids=()
    for s in $SEEDS; do
        # the user's overrides last, so that they win
        etc_args=(--set "teacher_checkpoint=$TEACHER_CKPT"
                  --set "teacher_gate_reference=$OUT/student_tl_s$s/best.safetensors"
                  --set "teacher_cache_dir=$OUT/teacher_cache_s$s"
                  --set "teacher_scales=$TEACHER_SCALES" --set "teacher_flip=$TEACHER_FLIP"
                  "${student_args[@]}" "${ETC_SET_ARGS[@]}")
        (
            # The gate refuses a teacher that is not 3 val mIoU better than this seed's TL student
            # (exit 3, like `make train`); then distil anyway and say so, rather than ship nothing.
            rc=0
            train "student_etc_s$s" student_etc "$s" "$ETC_WORKERS" "${etc_args[@]}" || rc=$?
            if [ "$rc" -eq 3 ]; then
                reason=$(tr '\r' '\n' <"$OUT/student_etc_s$s.log" | tail -1)  # no progress bars
                echo "teacher gate refused for seed $s: $reason" | tee -a "$OUT/gate.log"
                train "student_etc_s$s" student_etc "$s" "$ETC_WORKERS" "${etc_args[@]}" \
                    --allow-weak-teacher
            else
                exit "$rc"
            fi
        ) &
        pids+=($!)
    done
    wait_all "${pids[@]}"
fi

if stage export; then
    stamp "export"
    if [ -z "$TEACHER" ]; then
        "$PY" -m training.export --run "$OUT/teacher" --out "$OUT/export/teacher.safetensors" \
            --name teacher
    fi
    for s in $SEEDS; do
        for kind in baseline tl etc; do
            "$PY" -m training.export --run "$OUT/student_${kind}_s$s" \
                --out "$OUT/export/student_${kind}_s$s.safetensors" --name "student_$kind"
        done
    done
fi
stamp done
