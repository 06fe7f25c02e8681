#!/usr/bin/env bash
# Creates (or refreshes) the project venv. Without a sourced ROS 2 install it also installs the
# ROS 2 wheels from PyPI: Kilted, or Jazzy with ROS_WHEELS=jazzy (see workspace.sh); with one
# (ROS_DISTRO set) the venv sees the system's rclpy through --system-site-packages instead.
# Idempotent: a finished venv is reused. Usage: [ROS_WHEELS=jazzy] setup_venv.sh [VENV]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOTUS_ROOT="$HERE"
# shellcheck source=workspace.sh
source "$HERE/scripts/workspace.sh"
VENV="${1:-$LOTUS_VENV}"
STAMP="$VENV/.lotus_ros_setup_done"

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$HERE/scripts/setup_venv.sh" ] \
    && [ "$STAMP" -nt "$HERE/requirements.txt" ]; then
  exit 0
fi

if [ -n "${ROS_DISTRO:-}" ]; then
  python3 -m venv --system-site-packages "$VENV"
else
  PYTHON="${PYTHON:-python3.11}"  # the ROS 2 wheels on PyPI are built for CPython 3.11
  command -v "$PYTHON" >/dev/null || PYTHON=python3
  "$PYTHON" -m venv "$VENV"
fi
touch "$VENV/COLCON_IGNORE"

# pip's output, less the notes about this machine's absent local package mirrors.
pip_install() {
  local log
  log="$(mktemp)"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q "$@" \
      >"$log" 2>&1; then
    cat "$log"
    rm -f "$log"
    return 1
  fi
  grep -v 'is ignored: it is neither a file nor a directory' "$log" || true
  rm -f "$log"
}

# torch first and pinned: the local CPU wheel here, a CUDA build on a GPU machine's PyPI. A bare
# `torch` resolved first by another package would pull several GB of CUDA libraries.
pip_install "${TORCH_SPEC:-torch==2.13.0}"
pip_install -r "$HERE/requirements.txt"

if [ -z "${ROS_DISTRO:-}" ]; then
  # The same packages for both distros; Kilted's wheels are named ros-NAME, Jazzy's ros-jazzy-NAME.
  ROS_PACKAGES=(rclpy std-msgs sensor-msgs geometry-msgs diagnostic-msgs rosgraph-msgs
    rmw-fastrtps-cpp rosidl-default-generators ament-cmake ament-package
    ament-cmake-include-directories rosidl-core-generators)
  if [ "$ROS_WHEELS" = jazzy ]; then
    # CMake packages Jazzy's wheels find without requiring them: ament_cmake_ros (Kilted's
    # ament_cmake_ros_core; rosidl_typesupport_fastrtps_c finds it), whose extras find gmock, gtest
    # and pytest, and python_cmake_module (rosidl_generator_py).
    ROS_PACKAGES+=(ament-cmake-ros ament-cmake-gmock ament-cmake-gtest ament-cmake-pytest
      python-cmake-module)
    PREFIX=ros-jazzy-
  else
    ROS_PACKAGES+=(ament-cmake-ros-core)
    PREFIX=ros-
  fi
  pip_install "${ROS_PACKAGES[@]/#/$PREFIX}" colcon-common-extensions
  # The ROS wheels' CMake exports carry their build machine's Python and numpy include paths.
  PY_INCLUDE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  NP_INCLUDE="$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')"
  { grep -rlE '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' || true; } | while read -r f; do
    sed -i \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INCLUDE#g" \
      -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INCLUDE#g" "$f"
  done
fi

touch "$STAMP"
