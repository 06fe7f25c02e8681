"""`python -m lotus_ros.node_benchmark`: the documented command (lotus_ros.benchmarks)."""

import sys

from lotus_ros.benchmarks.node_benchmark import main

if __name__ == '__main__':
    sys.exit(main())
