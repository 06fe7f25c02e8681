"""
ROS test plumbing: private DDS domains, the node as a process, an rclpy client.

The installed lotus_node runs as its own process; the client (deserialized or raw messages)
spins in a background thread of the test process.

Each test gets its own ROS_DOMAIN_ID, claimed machine-wide, so tests (and other runs on the
machine) never see each other's topics.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
import time

import pytest

rclpy = pytest.importorskip('rclpy', reason='ROS 2 (rclpy) is not installed')
from std_msgs.msg import Header  # noqa: E402

from lotus_ros.benchmarks.model_double import DOUBLE_FACTORY  # noqa: E402
from lotus_ros.demo import node_process  # noqa: E402
from lotus_ros.demo.node_process import Client, ros_environment  # noqa: E402, F401
from lotus_ros.ros import messages  # noqa: E402
from lotus_ros.ros.messages import pinhole_camera_info as camera_info  # noqa: E402, F401

FRAME_ID = 'camera_optical'
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_domains = itertools.count(os.getpid() * 7)


def next_domain() -> int:
    """Return a domain id no other process holds, a new one per test (claim_domain)."""
    return node_process.claim_domain(next(_domains))


def ros_env(domain_id: int) -> dict[str, str]:
    """Return the node's ROS subprocess environment, unbuffered."""
    env = ros_environment(domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def node_executable(name: str = 'lotus_node') -> str:
    from lotus_ros import installed

    exe = installed.node_executable(name)
    if exe is None:
        pytest.skip(f'{name} is not installed: run `make build` and source install/setup.bash')
    return str(exe)


def reliable(depth: int = 50):
    return Client.reliable(depth)


def deep_output_history(params: dict, depth: int = 50) -> dict:
    """
    REP 2003 overrides giving every output writer of every camera a deep history.

    Fast DDS may hold a reliable sample back for a second or more; with the node's depth of 5
    a burst of later frames would push it out before it is delivered, and a test counting every
    message would see one missing. A test's own qos_overrides win over these.
    """
    from lotus_ros.ros.camera import camera_topic
    from lotus_ros.ros.outputs import OUTPUTS

    cameras = params.get('cameras') or ['']
    return {f'qos_overrides./{camera_topic(c, name)}.publisher.depth': depth
            for c in cameras for name in OUTPUTS}


class NodeProcess(node_process.NodeProcess):
    """The node under test, loading the model double unless the test names an engine."""

    def __init__(self, tmp_path: Path, domain: int, params: dict | None = None,
                 env: dict | None = None, remaps: dict | None = None,
                 executable: str = 'lotus_node'):
        node_executable(executable)
        params = {'engine_factory': DOUBLE_FACTORY, **deep_output_history(params or {}),
                  **(params or {})}
        super().__init__(tmp_path / f'node_{domain}.log', {**ros_env(domain), **(env or {})},
                         params=params,
                         remaps=remaps, cwd=tmp_path, executable=executable)


def wait_until_ready(client: Client, node: NodeProcess, *publishers, timeout: float = 30.0,
                     settle: float = 1.0) -> None:
    """
    Wait for the node's 'ready:', for every publisher heard and every subscription matched.

    Fails with the node's log. A message published before discovery has matched its reader
    is lost (volatile QoS): a test that counts every output must not start earlier. `settle`
    gives the node's side of the match (and its lazy check) time to see our subscriptions.
    """
    assert client.wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers),
                           timeout), node.log()
    assert client.wait_for(lambda: 'ready:' in node.log(), timeout), node.log()
    assert client.wait_for(lambda: not client.unmatched(), timeout), \
        f'no publisher for {client.unmatched()}\n{node.log()}'
    time.sleep(settle)


def header_at(stamp: float) -> Header:
    return messages.header_at(stamp, FRAME_ID)


def set_parameters(client: Client, values: dict, node: str = '/lotus') -> list:
    """Set parameters through the node's service (types from the Python values); the results."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    service = client.node.create_client(SetParameters, node + '/set_parameters')
    assert service.wait_for_service(timeout_sec=10)
    future = service.call_async(SetParameters.Request(
        parameters=[Parameter(name, value=v).to_parameter_msg() for name, v in values.items()]))
    assert client.wait_for(future.done, 10)
    return future.result().results


def diagnostics_values(client: Client) -> dict[str, str]:
    """Key/values of the newest pipeline status on /diagnostics."""
    for arr in reversed(client.messages('/diagnostics')):
        for st in arr.status:
            if st.name.endswith('pipeline'):
                return {kv.key: kv.value for kv in st.values}
    return {}
