"""
lotus_lifecycle_node: the lotus node as a managed (lifecycle) node, for Nav2-style bring-up.

The same node as lotus_node (one implementation, LotusNode's steps), driven by the lifecycle
transitions instead of its constructor: configure loads the model and creates the endpoints,
activate starts inference, deactivate stops it and keeps the model, cleanup frees the model's
memory. A failing transition logs why and leaves the node where it was; the process stays up.
"""

from __future__ import annotations

import sys

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from lotus_ros.ros.node import NODE_NAME, LotusNode, StartupError
from lotus_ros.ros.node import main as run_node


def failure_reason(error: Exception) -> str:
    """One log line: a StartupError says it all, anything else also needs its type."""
    what = ' '.join(str(error).split())
    return what if isinstance(error, StartupError) else f'{type(error).__name__}: {what}'


class LotusLifecycleNode(LifecycleNodeMixin, LotusNode):
    """LotusNode whose steps run on lifecycle transitions; publishes only while active."""

    def __init__(self, **kwargs):
        Node.__init__(self, NODE_NAME, **kwargs)
        self._init_state()
        LifecycleNodeMixin.__init__(self)

    # Lifecycle publishers drop what is published while inactive, even by a late worker.
    def _create_output_publisher(self, msg_type, topic: str, qos, **kwargs):
        return self.create_lifecycle_publisher(msg_type, topic, qos, **kwargs)

    def _destroy_output_publisher(self, publisher) -> None:
        self.destroy_lifecycle_publisher(publisher)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:  # a model that cannot load, a bad parameter: refuse, stay up
            self.get_logger().error(f'configure failed: {failure_reason(e)}')
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info('configured: model loaded, endpoints created, inference off')
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the publishers before the first frame
        if result == TransitionCallbackReturn.SUCCESS:
            self._activate()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info('deactivated: inference stopped, model kept')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info('cleaned up: endpoints destroyed, model released')
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()  # from unconfigured, inactive or active alike
        self.get_logger().info(f'shut down from {state.label}')
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'a transition from {state.label} raised: releasing everything')
        self._cleanup()
        return super().on_error(state)  # SUCCESS: back to unconfigured


def main(args: list[str] | None = None) -> int:
    return run_node(args, node_class=LotusLifecycleNode)


if __name__ == '__main__':
    sys.exit(main())
