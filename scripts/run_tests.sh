#!/usr/bin/env bash
# Runs the test suite against the built workspace (source scripts/env.sh first; `make test` does).
# Each run gets its own ROS_DOMAIN_ID so parallel runs on one machine don't cross-talk.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
cd "$HERE"
exec pytest -p no:cacheprovider -q -ra test "$@"
