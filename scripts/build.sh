#!/usr/bin/env bash
# Builds lotus_ros with colcon into ./install (./install-jazzy with ROS_WHEELS=jazzy, see
# workspace.sh): against the venv's ROS 2 wheels, or against a sourced ROS 2 install (ROS_DISTRO
# set) when there is one.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOTUS_ROOT="$HERE"
# shellcheck source=workspace.sh
source "$HERE/scripts/workspace.sh"
VENV="$LOTUS_VENV"
cd "$HERE"

# shellcheck disable=SC1091
source "$VENV/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # rosidl finds its type support packages through the ament resource index in the venv.
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
colcon --log-base "$LOTUS_LOG_BASE" build --paths "$HERE" --symlink-install \
  --build-base "$LOTUS_BUILD_BASE" --install-base "$LOTUS_INSTALL_BASE" \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
  --event-handlers console_direct- summary+
