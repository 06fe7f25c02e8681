"""`python -m lotus_ros.demo`: the main job (see lotus_ros.demo.run)."""

import sys

from lotus_ros.demo.run import main

sys.exit(main())
