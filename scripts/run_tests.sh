#!/usr/bin/env bash
# Runs the test suite against the built workspace (source scripts/env.sh first; `make test` does).
# Each run gets its own ROS_DOMAIN_ID so parallel runs on one machine don't cross-talk.
# Extra arguments (e.g. -x, -k EXPR) go to both pytest runs below.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}"
cd "$HERE"

# A last bound on a whole pytest run (it takes about 6 min): native code that spins holding the
# GIL (a DDS teardown deadlock) stops pytest-timeout too; faulthandler_timeout (setup.cfg) has
# printed every thread's stack by then.
LIMIT="${LOTUS_TEST_LIMIT:-1800}"
bounded() {
  local rc=0
  timeout --foreground -k 30 "$LIMIT" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "--- pytest did not end within ${LIMIT} s: killed" >&2
  fi
  return "$rc"
}

status=0
bounded pytest -p no:cacheprovider -q -ra test "$@" || status=$?
if [ "$status" -eq 2 ]; then  # interrupted (Ctrl-C) or usage error: stop here
  exit "$status"
fi

# The tests that run the engine numerically, again with AVX2 kernels only: AVX2-only CPUs (AMD
# EPYC, older Intel) take other convolution kernels than AVX-512 ones, so a tolerance that holds
# only with AVX-512 fails here. Both variables only restrict kernels: this works on any x86 CPU.
echo "--- engine tests again with AVX2 kernels (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)"
avx2=0
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 bounded pytest -p no:cacheprovider -q -ra \
  test/test_engine.py test/test_lotus_g.py test/test_marigold.py \
  test/test_node_contract.py::test_real_engine_tiny_random_weights "$@" \
  || avx2=$?
if [ "$avx2" -eq 5 ]; then  # the extra arguments selected none of these tests
  avx2=0
fi
if [ "$status" -eq 0 ]; then
  status=$avx2
fi
exit "$status"
