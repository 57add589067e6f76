# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create or update .venv when requirements.txt or setup.py changed.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Keep ROS traffic on this machine (Kilted ignores ROS_LOCALHOST_ONLY).
ROS_ENV := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_LOG_DIR=$(CURDIR)/.ros_log \
           FASTDDS_DEFAULT_PROFILES_FILE=$(CURDIR)/config/fastdds_shm.xml

.PHONY: venv test demo lint bench data train results

$(STAMP): requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: venv
	$(ROS_ENV) $(PY) -m pytest -q test

demo: venv
	$(ROS_ENV) ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-42} $(PY) -m etc_ros.demo

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(ROS_ENV) ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-43} $(PY) -m etc_ros.bench
