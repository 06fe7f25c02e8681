# Source this file: it activates the venv, the built workspace and the Fast DDS profile for large
# messages. Usage: [ROS_WHEELS=jazzy] source scripts/env.sh (see workspace.sh)
LOTUS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=workspace.sh
source "$LOTUS_ROOT/scripts/workspace.sh" || return 1
# shellcheck disable=SC1091
source "$LOTUS_VENV/bin/activate"
if [ -z "${ROS_DISTRO:-}" ]; then
  export AMENT_PREFIX_PATH="${VIRTUAL_ENV}${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
# shellcheck disable=SC1091
source "$LOTUS_INSTALL_BASE/setup.bash"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$LOTUS_ROOT/config/fastdds_profile.xml}"
