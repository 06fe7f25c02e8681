"""
lotus_lifecycle_node driven the way Nav2's lifecycle_manager drives it: lifecycle_msgs services.

The node runs as its own process with the model double, which reports to a file how many engines
are alive and how many model calls it served; the client in this process calls change_state and
get_state and watches the outputs. One test runs the node in this process, with the real engine
(tiny random weights), to see that cleanup leaves nothing holding it.
"""

import gc
import json
import time
import weakref

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import Client, NodeProcess, header_at, next_domain
import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.lifecycle import TransitionCallbackReturn
from sensor_msgs.msg import Image

from lotus_ros.ros.images import array_to_image

NAMESPACE = '/lt'
NODE = NAMESPACE + '/lotus'     # the node keeps its name under the namespace
RGB = np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8)
QUIET = 1.5                     # s of frames that must produce nothing while not active


def call(client: Client, service, request, timeout: float = 30.0, resend: float | None = None):
    """
    Call a service and wait for its answer; `resend` seconds re-send an idempotent request.

    wait_for_service only says the server hears requests: until it has discovered this
    client's reply reader a reply can be lost (a DDS discovery race), so queries are re-sent.
    """
    deadline = time.monotonic() + timeout
    while True:
        future = service.call_async(request)
        wait = timeout if resend is None else min(resend, max(0.0, deadline - time.monotonic()))
        if client.wait_for(future.done, wait):
            return future.result()
        assert resend is not None and time.monotonic() < deadline, \
            f'{service.srv_name} did not answer'


class Manager:
    """The client side of a lifecycle manager: transitions and the current state."""

    def __init__(self, client: Client, node: NodeProcess):
        self.client, self.node = client, node
        self._change = client.node.create_client(ChangeState, NODE + '/change_state')
        self._get = client.node.create_client(GetState, NODE + '/get_state')
        for service in (self._change, self._get):
            assert service.wait_for_service(timeout_sec=30), node.log()
        # One answered query: the node has discovered this participant's reply readers (both
        # clients were created together), so a transition's reply is not lost.
        self.state()

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        return call(self.client, self._change, request).success

    def state(self) -> str:
        return call(self.client, self._get, GetState.Request(), resend=2.0).current_state.label


class Double:
    """What the model double in the node process reports: engines alive, model calls served."""

    def __init__(self, path):
        self.path = path

    def counts(self) -> dict[str, int]:
        return json.loads(self.path.read_text()) if self.path.exists() else \
            {'alive': 0, 'calls': 0}

    @property
    def alive(self) -> int:
        return self.counts()['alive']

    @property
    def calls(self) -> int:
        return self.counts()['calls']


def feed(pub, seconds: float, until=None) -> bool:
    """Publish frames at ~20 Hz for `seconds` or until `until()` holds; return until()."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.publish(array_to_image(RGB, 'rgb8', header_at(time.time())))
        if until is not None and until():
            return True
        time.sleep(0.05)
    return until is not None and until()


def set_bool(client: Client, name: str, value: bool) -> bool:
    service = client.node.create_client(SetParameters, NODE + '/set_parameters')
    assert service.wait_for_service(timeout_sec=10)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_BOOL, bool_value=value))])
    return call(client, service, request, resend=2.0).results[0].successful


@pytest.fixture
def lifecycle_node(tmp_path):
    """Start the lifecycle node (unconfigured) in /lt; yield (node, client, manager, double)."""
    def start(env=None):
        domain = next_domain()
        double = Double(tmp_path / 'double.json')
        node = NodeProcess(tmp_path, domain, {'alignment.source': 'none'},
                           env={'LOTUS_DOUBLE_REPORT': str(double.path), **(env or {})},
                           remaps={'__ns': NAMESPACE}, executable='lotus_lifecycle_node')
        client = Client(domain)
        started.append((node, client))
        return node, client, Manager(client, node), double

    started = []
    yield start
    for node, client in started:
        client.close()
        node.stop()
        assert 'Traceback' not in node.log(), node.log()


def test_outputs_only_while_active_and_the_engine_is_released_on_cleanup(lifecycle_node):
    node, client, manager, double = lifecycle_node()
    output = NAMESPACE + '/depth/relative'
    client.subscribe(Image, output)
    pub = client.publisher(Image, NAMESPACE + '/image')
    assert manager.state() == 'unconfigured'
    assert double.alive == 0, 'the model must not load before configure'

    assert manager.transition(Transition.TRANSITION_CONFIGURE), node.log()
    assert manager.state() == 'inactive'
    assert double.alive == 1
    assert client.wait_for(lambda: pub.get_subscription_count() > 0, 10), \
        'configure creates the subscriptions'
    feed(pub, QUIET)
    assert (client.count(output), double.calls) == (0, 0), 'inactive: no output, no inference'

    assert manager.transition(Transition.TRANSITION_ACTIVATE), node.log()
    assert manager.state() == 'active'
    assert feed(pub, 20, until=lambda: client.count(output) >= 3), node.log()

    assert manager.transition(Transition.TRANSITION_DEACTIVATE), node.log()
    assert manager.state() == 'inactive'
    time.sleep(0.5)  # outputs published before the deactivation may still be in flight
    client.clear()
    calls = double.calls
    feed(pub, QUIET)
    assert (client.count(output), double.calls) == (0, calls), \
        'deactivated: no output, no inference'
    assert double.alive == 1, 'deactivate keeps the model'

    assert manager.transition(Transition.TRANSITION_CLEANUP), node.log()
    assert manager.state() == 'unconfigured'
    assert double.alive == 0, 'cleanup must drop every reference to the engine'
    assert client.wait_for(lambda: pub.get_subscription_count() == 0, 10), \
        'cleanup destroys the subscriptions'

    # configured again: a new engine, outputs again
    assert manager.transition(Transition.TRANSITION_CONFIGURE), node.log()
    assert double.alive == 1
    assert manager.transition(Transition.TRANSITION_ACTIVATE), node.log()
    client.clear()
    assert feed(pub, 20, until=lambda: client.count(output) >= 3), node.log()

    assert manager.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN), node.log()
    assert manager.state() == 'finalized'
    assert double.alive == 0
    assert node.alive(), 'a finalized node stays up until its process is stopped'


def test_failing_configure_leaves_the_node_unconfigured_with_the_reason(lifecycle_node):
    node, client, manager, double = lifecycle_node(env={'LOTUS_DOUBLE_FAIL': '1'})
    reason = 'configure failed: cannot load the model (model double told to fail loading'

    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == 'unconfigured'
    assert client.wait_for(lambda: reason in node.log(), 5), node.log()
    assert node.alive()
    # a second attempt fails the same way (its parameters are already declared)
    assert not manager.transition(Transition.TRANSITION_CONFIGURE)
    assert manager.state() == 'unconfigured'
    assert client.wait_for(lambda: node.log().count(reason) == 2, 5), node.log()

    assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN), node.log()
    assert manager.state() == 'finalized'
    assert double.alive == 0


def test_runtime_parameters_outlive_cleanup_and_shutdown_from_inactive(lifecycle_node):
    node, client, manager, double = lifecycle_node()
    client.subscribe(Image, NAMESPACE + '/depth/relative')
    client.subscribe(Image, NAMESPACE + '/depth/colored')
    pub = client.publisher(Image, NAMESPACE + '/image')
    assert manager.transition(Transition.TRANSITION_CONFIGURE), node.log()
    assert set_bool(client, 'publish.relative', False)
    assert manager.transition(Transition.TRANSITION_CLEANUP), node.log()
    assert manager.transition(Transition.TRANSITION_CONFIGURE), node.log()
    assert manager.transition(Transition.TRANSITION_ACTIVATE), node.log()

    assert feed(pub, 20, until=lambda: client.count(NAMESPACE + '/depth/colored') >= 3), \
        node.log()
    assert client.count(NAMESPACE + '/depth/relative') == 0, 'publish.relative was set false'

    assert manager.transition(Transition.TRANSITION_DEACTIVATE), node.log()
    assert manager.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN), node.log()
    assert manager.state() == 'finalized'
    assert double.alive == 0


def test_cleanup_lets_go_of_the_real_engine(tiny_lotus):
    """In this process: after cleanup nothing references the Lotus engine that configure built."""
    pytest.importorskip('torch')
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter as NodeParameter

    from lotus_ros.ros.lifecycle_node import LotusLifecycleNode

    context = Context()
    rclpy.init(context=context, domain_id=next_domain())
    overrides = {'depth_model': str(tiny_lotus['depth']),
                 'normal_model': str(tiny_lotus['normal']), 'device': 'cpu',
                 'processing_resolution': 64, 'local_files_only': True,
                 'alignment.source': 'none'}
    node = LotusLifecycleNode(context=context, parameter_overrides=[
        NodeParameter(name, value=value) for name, value in overrides.items()])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        engine = weakref.ref(node.engine)
        (prediction,) = node.engine.predict_batch([RGB])  # a used engine, caches filled
        assert prediction.depth.shape == RGB.shape[:2]
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert engine() is None, gc.get_referrers(engine())
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
