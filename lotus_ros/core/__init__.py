"""
The product's ROS-free core: engines behind one interface, metric alignment and geometry.

Nothing here imports rclpy or ROS message packages (a test parses the imports), so the core runs
and is tested anywhere numpy and torch do.
"""
