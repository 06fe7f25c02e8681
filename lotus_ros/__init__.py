"""
Lotus-D monocular depth and surface normals for ROS 2.

The model, geometry and alignment modules are plain Python (numpy, torch); only the node layer
imports rclpy.
"""

__version__ = '0.1.0'
