"""claim_domain: concurrent runs on one machine never share a ROS domain."""

import ast
import subprocess
import sys

from lotus_ros.demo.node_process import DOMAIN_IDS, claim_domain

CLAIM_THREE = 'from lotus_ros.demo.node_process import claim_domain; ' \
    'print([claim_domain(5) for _ in range(3)])'


def test_a_claimed_domain_is_not_handed_to_another_process():
    mine = [claim_domain(5) for _ in range(3)]
    assert len(set(mine)) == 3 and all(d in DOMAIN_IDS for d in mine)
    out = subprocess.run([sys.executable, '-c', CLAIM_THREE], capture_output=True, text=True,
                         check=True)
    theirs = ast.literal_eval(out.stdout)
    assert len(set(theirs)) == 3 and not set(theirs) & set(mine), (mine, theirs)
