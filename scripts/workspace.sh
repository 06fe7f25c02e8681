# Sourced by setup_venv.sh, build.sh and env.sh: where the venv and the colcon build for one set of
# ROS 2 wheels live, so that a Kilted and a Jazzy build sit side by side. ROS_WHEELS picks the
# distro: kilted (the default: ~/.cache/lotus_ros/venv, ./build, ./install) or jazzy
# (~/.cache/lotus_ros/venv-jazzy, ./build-jazzy, ./install-jazzy). VENV overrides the venv.
ROS_WHEELS="${ROS_WHEELS:-kilted}"
case "$ROS_WHEELS" in
  kilted) LOTUS_SUFFIX='' ;;
  jazzy) LOTUS_SUFFIX='-jazzy' ;;
  *) echo "ROS_WHEELS=$ROS_WHEELS: expected kilted or jazzy" >&2; return 1 ;;
esac
LOTUS_VENV="${VENV:-$HOME/.cache/lotus_ros/venv$LOTUS_SUFFIX}"
LOTUS_BUILD_BASE="$LOTUS_ROOT/build$LOTUS_SUFFIX"
LOTUS_INSTALL_BASE="$LOTUS_ROOT/install$LOTUS_SUFFIX"
LOTUS_LOG_BASE="$LOTUS_ROOT/log$LOTUS_SUFFIX"
unset LOTUS_SUFFIX
