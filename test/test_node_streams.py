"""
Real driver publish order and replayed bags: camera_info after its image, time going backwards.

image_transport's CameraPublisher publishes the image before its camera_info; `ros2 bag play
--loop` (or a second bag) sends time back. Both against the real node process.
"""

import time

from node_harness import (
    Client,
    NodeProcess,
    camera_info,
    diagnostics_values,
    header_at,
    next_domain,
    wait_until_ready,
)
import numpy as np
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from lotus_ros.benchmarks.node_benchmark import synthetic_inputs
from lotus_ros.core.stamps import stamp_to_ns
from lotus_ros.ros.images import array_to_image

W, H = 96, 72


def test_image_before_camera_info_every_frame_has_points(tmp_path):
    """150 frames at 10 Hz, each camera_info 0-40 ms after its image: every frame is complete."""
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, {'drop_frames': False, 'alignment.source': 'none',
                                          'alignment.fixed_scale': 2.0, 'lazy': False})
    client = Client(domain)
    rng = np.random.default_rng(10)
    images, k, _ = synthetic_inputs(W, H)
    try:
        for topic, msg_type in (('points', PointCloud2), ('depth/image', Image),
                                ('depth/camera_info', CameraInfo), ('depth/relative', Image)):
            client.subscribe(msg_type, topic, raw=False)
        pub_img = client.publisher(Image, 'image')
        pub_info = client.publisher(CameraInfo, 'camera_info')
        wait_until_ready(client, node, pub_img, pub_info)
        stamps = [1000.0 + 0.1 * i for i in range(150)]
        start = time.monotonic()
        for i, stamp in enumerate(stamps):
            hdr = header_at(stamp)
            pub_img.publish(array_to_image(images[i % len(images)], 'rgb8', hdr))
            time.sleep(rng.uniform(0.0, 0.04))
            pub_info.publish(camera_info(np.reshape(k, (3, 3)), W, H, hdr))
            time.sleep(max(0.0, start + 0.1 * (i + 1) - time.monotonic()))
        client.wait_for_counts({'points': 150, 'depth/camera_info': 150}, 30)
        counts = {t: len(client.messages(t)) for t in
                  ('points', 'depth/image', 'depth/camera_info', 'depth/relative')}
        image_stamps = [stamp_to_ns(m.header.stamp) for m in client.messages('depth/image')]
        info_stamps = [stamp_to_ns(m.header.stamp) for m in client.messages('depth/camera_info')]
    finally:
        client.close()
        node.stop()
    assert counts == {'points': 150, 'depth/image': 150, 'depth/camera_info': 150,
                      'depth/relative': 150}, (counts, node.log()[-2000:])
    assert image_stamps == info_stamps == [stamp_to_ns(header_at(s).stamp) for s in stamps]


def test_bag_replayed_twice_resets_the_metric_fit(tmp_path):
    """Second replay (time back to the start) without LiDAR: the first run's fit is not reused."""
    domain = next_domain()
    max_age = 0.5
    node = NodeProcess(tmp_path, domain, {'use_sim_time': True, 'drop_frames': False,
                                          'lazy': False, 'alignment.max_age': max_age,
                                          'alignment.max_time_difference': 0.02})
    client = Client(domain)
    images, k, sparse = synthetic_inputs(W, H)
    try:
        client.subscribe(Image, 'depth/image')
        client.subscribe(Image, 'depth/relative')
        from diagnostic_msgs.msg import DiagnosticArray
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub_clock = client.publisher(Clock, '/clock')
        pub_img = client.publisher(Image, 'image')
        pub_info = client.publisher(CameraInfo, 'camera_info')
        pub_sparse = client.publisher(Image, 'sparse_depth')
        pub_clock.publish(Clock(clock=header_at(99.9).stamp))
        wait_until_ready(client, node, pub_img, pub_info, pub_sparse)
        stamps = [100.0 + 0.1 * i for i in range(20)]
        for run in (1, 2):
            for i, stamp in enumerate(stamps):
                hdr = header_at(stamp)
                pub_clock.publish(Clock(clock=hdr.stamp))
                if run == 1:
                    pub_sparse.publish(array_to_image(sparse, '32FC1', hdr))
                pub_info.publish(camera_info(np.reshape(k, (3, 3)), W, H, hdr))
                pub_img.publish(array_to_image(images[i % len(images)], 'rgb8', hdr))
                time.sleep(0.1)
            assert client.wait_for_counts({'depth/relative': len(stamps)}, 30), node.log()
            if run == 1:
                metric_run1 = len(client.messages('depth/image'))
                client.clear()
        time.sleep(1.5)   # a /diagnostics period
        metric_run2 = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                       for m in client.messages('depth/image')]
        diag = diagnostics_values(client)
    finally:
        client.close()
        node.stop()
    assert metric_run1 >= 15                       # the LiDAR run is metric
    # Run 2 has no LiDAR: no metric frame may outlive max_age, whatever run 1 fitted.
    assert all(s - stamps[0] <= max_age + 1e-6 for s in metric_run2), metric_run2
    assert int(diag['time_jumps']) >= 1, diag
    assert 'time went backwards' in node.log()
