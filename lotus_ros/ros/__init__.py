"""
The ROS 2 layer: the lotus node, its frame processor and the message conversions it needs.

Depends on lotus_ros.core only; rclpy and sensor_msgs are imported here and above, never below.
"""
