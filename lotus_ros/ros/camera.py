"""
One camera's share of the node: its topics, parameters, filters, caches and counters.

The node keeps one Camera per name of the `cameras` parameter and nothing per camera anywhere
else, so two cameras cannot share state by accident; only the engine (BatchInference) and the
frame scheduler are common to all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import threading
from typing import Any

from lotus_ros.ros.diagnostics import NodeStats
from lotus_ros.ros.frame_assembly import FrameAssembler
from lotus_ros.ros.processor import FrameProcessor


def camera_topic(camera: str, name: str) -> str:
    """Return a camera's relative topic `name` ('' = the single camera: no prefix)."""
    return f'{camera}/{name}' if camera else name


def status_prefix(node_name: str, camera: str) -> str:
    """Name a camera's /diagnostics statuses: the node's name, the camera's appended."""
    return f'{node_name}/{camera}' if camera else node_name


@dataclass
class Camera:
    name: str
    processor: FrameProcessor          # alignment, stabiliser and the camera's parameters
    assembler: FrameAssembler          # camera_info and sparse stamp caches
    own: dict[str, Any]                # its own values (cameras_params.<name>.*)
    stats: NodeStats = field(default_factory=NodeStats)
    subscriptions: list = field(default_factory=list)
    info_sub: Any = None
    pubs: dict[str, Any] = field(default_factory=dict)
    last_image_ns: int | None = None   # stamp of its previous image (backward jumps)
    time_jumped: threading.Event = field(default_factory=threading.Event)

    def topic(self, name: str) -> str:
        return camera_topic(self.name, name)

    def label(self, node_name: str) -> str:
        return status_prefix(node_name, self.name)

    @property
    def log_prefix(self) -> str:
        """What its log lines start with ('' for the single camera)."""
        return f'camera {self.name}: ' if self.name else ''
