# lotus_ros: `make demo` runs the main job, `make test` runs the tests. Both set everything up first
# (venv with torch + ROS 2 wheels when no ROS 2 install is sourced, then colcon build).
# `make test ROS_WHEELS=jazzy` does the same with the Jazzy wheels, in its own venv and its own
# build-jazzy/ and install-jazzy/ (scripts/workspace.sh), beside the Kilted ones.
SHELL := /bin/bash
ROS_WHEELS ?= kilted
export ROS_WHEELS
# The venv lives outside the source tree: CMake refuses generated targets whose include paths
# (numpy's headers) lie inside the package's source directory.
VENV ?= $(HOME)/.cache/lotus_ros/venv$(if $(filter jazzy,$(ROS_WHEELS)),-jazzy)
TINY ?=
DEMO_ARGS ?=
IN_ENV = VENV=$(VENV) source scripts/env.sh &&

.PHONY: all setup build test lint demo benchmark clean

all: build

setup:
	scripts/setup_venv.sh $(VENV)

build: setup
	VENV=$(VENV) scripts/build.sh

test: build
	$(IN_ENV) scripts/run_tests.sh

lint: setup
	$(VENV)/bin/ruff check .

demo: build
	$(IN_ENV) python -m lotus_ros.demo $(if $(TINY),--tiny) $(DEMO_ARGS)

benchmark: build
	$(IN_ENV) python -m lotus_ros.benchmarks.engine_benchmark --random-weights && \
	  python -m lotus_ros.benchmarks.geometry_benchmark && python -m lotus_ros.benchmarks.node_benchmark

clean:
	rm -rf build install log build-jazzy install-jazzy log-jazzy demo_output
