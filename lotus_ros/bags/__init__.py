"""rosbag2 tools for real bags: reading/writing with rosbags, the player and process_bag."""
