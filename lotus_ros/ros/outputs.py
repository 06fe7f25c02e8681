"""
The node's output topics in one table: message type, switching parameter, what each needs.

Processor, node, bag tool, demo, benchmarks and tests all read this one table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sensor_msgs.msg import CameraInfo, Image, PointCloud2


@dataclass(frozen=True)
class Output:
    msg_type: type | None    # None: lotus_ros/DepthAlignment, generated (see alignment_type)
    toggle: str              # the publish.* parameter that switches it
    needs_depth: bool
    needs_normal: bool = False
    needs_uncertainty: bool = False  # only from a backend with has_uncertainty
    needs_stabilize: bool = False    # only while temporal.stabilize is on


OUTPUTS: dict[str, Output] = {
    'depth/image': Output(Image, 'publish.depth', needs_depth=True),
    'depth/camera_info': Output(CameraInfo, 'publish.depth', needs_depth=True),
    # stabilised while temporal.stabilize is on (reference: lotus_ros.core.temporal)
    'depth/relative': Output(Image, 'publish.relative', needs_depth=True),
    'depth/relative_raw': Output(Image, 'publish.relative_raw', needs_depth=True,
                                 needs_stabilize=True),
    # 32FC1 std of the depth: metres while metric, else in depth/relative's units
    'depth/uncertainty': Output(Image, 'publish.uncertainty', needs_depth=True,
                                needs_uncertainty=True),
    'depth/colored': Output(Image, 'publish.depth_colored', needs_depth=True),
    'normal/image': Output(Image, 'publish.normal', needs_depth=False, needs_normal=True),
    'normal/colored': Output(Image, 'publish.normal_colored', needs_depth=False,
                             needs_normal=True),
    'points': Output(PointCloud2, 'publish.points', needs_depth=True),
    'alignment': Output(None, 'publish.alignment', needs_depth=True),
}


def alignment_type() -> type | None:
    """lotus_ros.msg.DepthAlignment, or None in a source tree without a colcon build."""
    try:
        from lotus_ros.msg import DepthAlignment
    except ImportError:
        return None
    return DepthAlignment


def output_types() -> dict[str, type]:
    """Topic name -> message type of every output this build can publish."""
    align = alignment_type()
    return {name: out.msg_type or align for name, out in OUTPUTS.items()
            if (out.msg_type or align) is not None}
