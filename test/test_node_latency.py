"""
Bounded latency with a model slower than the camera (group 3 of the node issue).

A 200 ms model double fed at 30 Hz for 10 s: output about 5 Hz, stamp-to-publish p95 within two
inference times plus one frame period, dropped frames counted, resident memory flat.
"""

import time

from node_harness import (
    Client,
    NodeProcess,
    diagnostics_values,
    header_at,
    next_domain,
    wait_until_ready,
)
import numpy as np
from sensor_msgs.msg import Image

from lotus_ros.ros.images import array_to_image

DELAY = 0.2
RATE = 30.0
DURATION = 10.0


def test_latency_stays_bounded_when_model_is_slow(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    domain = next_domain()
    node = NodeProcess(tmp_path, domain, {'alignment.source': 'none'},
                       env={'LOTUS_DOUBLE_DELAY': str(DELAY)})
    client = Client(domain)
    try:
        client.subscribe(Image, 'depth/relative')
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')
        wait_until_ready(client, node, pub)
        rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        t_start = time.monotonic()
        sent = 0
        rss_start = None
        while time.monotonic() - t_start < DURATION:
            now = time.time()
            pub.publish(array_to_image(rgb, 'rgb8', header_at(now)))
            sent += 1
            if rss_start is None and time.monotonic() - t_start > 2.0:
                rss_start = node.rss_mb()
            time.sleep(max(0.0, t_start + sent / RATE - time.monotonic()))
        time.sleep(DELAY * 3)
        rss_end = node.rss_mb()
        client.wait_for(lambda: int(diagnostics_values(client).get('frames_processed', 0)) >=
                        len(client.messages('depth/relative')), 3)
        timed = client.timed('depth/relative')
        diag = diagnostics_values(client)
    finally:
        client.close()
        node.stop()

    assert len(timed) > 10, node.log()
    recv = np.array([t for t, _ in timed])
    lat = np.array([t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9) for t, m in timed])
    rate = (len(recv) - 1) / (recv[-1] - recv[0])
    p95 = float(np.percentile(lat, 95))
    print(f'sent {sent}, received {len(recv)} at {rate:.2f} Hz, latency p50 '
          f'{np.median(lat):.3f} s p95 {p95:.3f} s, diagnostics {diag}, RSS '
          f'{rss_start:.0f} -> {rss_end:.0f} MB')
    assert 4.0 <= rate <= 5.5, f'output rate {rate:.2f} Hz'
    assert p95 <= 2 * DELAY + 1.0 / RATE, f'p95 latency {p95:.3f} s'
    dropped = int(diag['frames_dropped'])
    processed = int(diag['frames_processed'])
    # every frame the node received was either processed or counted as dropped
    assert dropped >= 0.6 * sent and abs(dropped + processed - sent) <= 0.05 * sent + 2, diag
    assert float(diag['latency_p95_s']) <= 2 * DELAY + 1.0 / RATE
    assert rss_end - rss_start < 50.0, f'RSS grew {rss_end - rss_start:.1f} MB'


def test_in_order_queue_processes_every_frame_and_logs_overflow(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    domain = next_domain()
    node = NodeProcess(tmp_path, domain, {'alignment.source': 'none', 'drop_frames': False,
                                          'queue_size': 5},
                       env={'LOTUS_DOUBLE_DELAY': '0.05'})
    client = Client(domain)
    try:
        client.subscribe(Image, 'depth/relative')
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub = client.publisher(Image, 'image')
        wait_until_ready(client, node, pub)
        rgb = np.zeros((48, 64, 3), np.uint8)
        for i in range(8):            # 8 frames at 10 Hz: slower than the model, none lost
            pub.publish(array_to_image(rgb, 'rgb8', header_at(100.0 + i)))
            time.sleep(0.1)
        assert client.wait_for(lambda: len(client.messages('depth/relative')) == 8, 5)
        for i in range(30):           # a burst: the bounded queue overflows
            pub.publish(array_to_image(rgb, 'rgb8', header_at(200.0 + i)))
            time.sleep(0.002)
        time.sleep(2.5)
        stamps = [m.header.stamp.sec for m in client.messages('depth/relative')]
        diag = diagnostics_values(client)
    finally:
        client.close()
        node.stop()
    assert stamps[:8] == list(range(100, 108))
    assert stamps == sorted(stamps)                       # in order, never newest-first
    assert int(diag['queue_overflows']) > 0 and diag['frames_dropped'] == '0', diag
    assert 'input queue full' in node.log()
