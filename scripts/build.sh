#!/usr/bin/env bash
# Builds lotus_ros with colcon into ./install: against the venv's ROS 2 wheels, or against a sourced
# ROS 2 install (ROS_DISTRO set) when there is one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$HOME/.cache/lotus_ros/venv}"
cd "$HERE"

# shellcheck disable=SC1091
source "$VENV/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # rosidl finds its type support packages through the ament resource index in the venv.
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
colcon --log-base "$HERE/log" build --paths "$HERE" --symlink-install \
  --build-base "$HERE/build" --install-base "$HERE/install" \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
  --event-handlers console_direct- summary+
