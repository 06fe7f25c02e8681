"""
Lotus-D monocular depth and surface normals for ROS 2.

The model, geometry and alignment modules are plain Python (numpy, torch); only the node layer
imports rclpy.
"""

from pkgutil import extend_path

# Run from the source tree (e.g. `python -m lotus_ros.demo` in the repo root), this package
# shadows the colcon-installed one; extending the path keeps the generated `lotus_ros.msg`
# importable from the install space.
__path__ = extend_path(__path__, __name__)

__version__ = '0.1.0'
