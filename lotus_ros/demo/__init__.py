"""The demo (`python -m lotus_ros.demo`) and its parts: synthetic scenes, tiny models."""
