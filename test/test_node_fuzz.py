"""
Fuzz every input of the running node with malformed messages (group 4 of the node issue).

At least 200 bad messages per input type; the node must stay up, count what it rejected, and
process the next good frame normally.
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
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from lotus_ros.ros.images import array_to_image, rgb_to_compressed

N = 200
W, H = 64, 48
K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
ENCODINGS = ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422', 'yuv422_yuy2',
             'bayer_rggb8', '32FC1', '', 'RGB8', 'jpeg', '8UC4']


def bad_image(rng, hdr) -> Image:
    """Break an Image at random: wrong step, truncated/extra data, bad sizes or encodings."""
    kind = int(rng.integers(0, 8))
    m = array_to_image(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), 'rgb8', hdr)
    data = bytes(m.data)
    if kind == 0:
        m.data = data[:int(rng.integers(0, len(data)))]
    elif kind == 1:
        m.step = int(rng.integers(0, W * 3))
    elif kind == 2:
        m.encoding = ENCODINGS[8 + int(rng.integers(0, len(ENCODINGS) - 8))]
    elif kind == 3:
        m.width, m.height = int(rng.integers(1, 2**31)), int(rng.integers(1, 2**31))
    elif kind == 4:
        m.height = 0
    elif kind == 5:
        m.data = data + bytes(int(rng.integers(1, 5000)))
    elif kind == 6:
        m.encoding, m.width, m.step = 'yuv422', W - 1, 2 * (W - 1)
    else:
        m.encoding = str(rng.choice(['mono16', '32FC1', 'rgba8']))  # sizes no longer fit
    return m


def bad_compressed(rng, hdr) -> CompressedImage:
    good = bytes(rgb_to_compressed(np.full((H, W, 3), 90, np.uint8), 'jpeg').data)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        data = good[:int(rng.integers(0, 40))]
    elif kind == 1:
        data = rng.integers(0, 255, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
    elif kind == 2:
        data = b'\x89PNG\r\n\x1a\n' + rng.integers(0, 255, 200, dtype=np.uint8).tobytes()
    else:
        data = b''
    return CompressedImage(header=hdr, format=str(rng.choice(['jpeg', 'png', 'rgb8; jpeg'])),
                           data=data)


def bad_info(rng, hdr) -> CameraInfo:
    info = camera_info(K, W, H, hdr)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        info.k, info.p = [0.0] * 9, [0.0] * 12
    elif kind == 1:
        info.width, info.height = W * 2, H + 3
    elif kind == 2:
        info.k, info.p = [float('nan')] * 9, [float('nan')] * 12
    else:
        info.k = [-5.0, 0, 1, 0, -5.0, 1, 0, 0, 1]
        info.p = [-5.0, 0, 1, 0, 0, -5.0, 1, 0, 0, 0, 1, 0]
    return info


def bad_sparse_depth(rng, hdr) -> Image:
    kind = int(rng.integers(0, 5))
    if kind == 0:
        return array_to_image(np.full((H, W), np.nan, np.float32), '32FC1', hdr)
    if kind == 1:
        return array_to_image(-rng.uniform(1, 5, (H, W)).astype(np.float32), '32FC1', hdr)
    if kind == 2:
        m = array_to_image(np.ones((H, W), np.uint16) * 1000, '16UC1', hdr)
        m.data = bytes(m.data)[:100]
        return m
    if kind == 3:
        return array_to_image(np.ones((H, 3 * W), np.float32), '32FC1', hdr)
    return array_to_image(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), 'rgb8', hdr)


def bad_points(rng, hdr) -> PointCloud2:
    pts = rng.uniform(1, 5, (50, 3)).astype(np.float32)
    m = PointCloud2(header=hdr, height=1, width=50, point_step=12, row_step=600,
                    is_bigendian=False, is_dense=True,
                    fields=[PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32,
                                       count=1) for i, n in enumerate('xyz')])
    m.data = pts.tobytes()
    kind = int(rng.integers(0, 6))
    if kind == 0:
        m.fields = m.fields[:2]
    elif kind == 1:
        m.fields[2].datatype = PointField.INT8
    elif kind == 2:
        m.fields[1].offset = 100
    elif kind == 3:
        m.row_step = 10
    elif kind == 4:
        m.width = 10**7
    else:
        m.data = np.full((50, 3), np.nan, np.float32).tobytes()
    return m


def fuzz_node(tmp_path, params, image_type, image_topic, sparse_type, sparse_topic,
              make_bad_image, make_bad_sparse, fuzz_info=True):
    from diagnostic_msgs.msg import DiagnosticArray
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, {'drop_frames': False, 'queue_size': 1000,
                                          'alignment.fixed_scale': 0.5, **params})
    client = Client(domain)
    rng = np.random.default_rng(11)
    try:
        client.subscribe(Image, 'depth/relative')
        client.subscribe(Image, 'depth/image')
        client.subscribe(PointCloud2, 'points')
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub_img = client.publisher(image_type, image_topic)
        pub_info = client.publisher(CameraInfo, 'camera_info')
        pub_sparse = client.publisher(sparse_type, sparse_topic)
        wait_until_ready(client, node, pub_img, pub_info, pub_sparse)

        good_rgb = np.full((H, W, 3), 120, np.uint8)

        def good_image(hdr):
            if image_type is CompressedImage:
                return rgb_to_compressed(good_rgb, 'png', hdr)
            return array_to_image(good_rgb, 'rgb8', hdr)

        t = 1000.0
        for _ in range(N):        # broken images
            t += 0.01
            pub_img.publish(make_bad_image(rng, header_at(t)))
            time.sleep(0.003)
        for _ in range(N):        # broken camera_info and sparse input, with good images
            t += 0.01
            hdr = header_at(t)
            pub_info.publish(bad_info(rng, hdr) if fuzz_info else camera_info(K, W, H, hdr))
            pub_sparse.publish(make_bad_sparse(rng, hdr))
            time.sleep(0.002)
            pub_img.publish(good_image(hdr))
            time.sleep(0.004)
        client.wait_for(lambda: int(diagnostics_values(client).get('frames_processed', -1))
                        >= N * 0.8, 10)
        client.clear()
        t += 1.0
        hdr = header_at(t)
        pub_info.publish(camera_info(K, W, H, hdr))
        time.sleep(0.05)
        pub_img.publish(good_image(hdr))

        def got_good():
            return any(m.header.stamp == hdr.stamp for m in client.messages('points'))
        assert client.wait_for(got_good, 10), node.log()
        time.sleep(1.2)
        diag = diagnostics_values(client)
        assert node.alive(), node.log()
        return diag, node.log()
    finally:
        client.close()
        node.stop()


def rejected(diag, prefix):
    return sum(int(v) for k, v in diag.items() if k.startswith('rejected_' + prefix))


def test_fuzz_raw_image_camera_info_sparse_depth(tmp_path):
    diag, log = fuzz_node(tmp_path, {}, Image, 'image', Image, 'sparse_depth', bad_image,
                          bad_sparse_depth)
    assert rejected(diag, 'image_') >= 0.8 * N, diag
    assert rejected(diag, 'camera_info_') >= 0.8 * N, diag
    assert rejected(diag, 'sparse_') >= 0.8 * N, diag
    assert 'Traceback' not in log
    # warnings are throttled: far fewer lines than bad messages, each naming the problem
    warnings = [ln for ln in log.splitlines() if 'WARN' in ln]
    assert 0 < len(warnings) < 60
    assert any('truncated' in w for w in warnings) and any('encoding' in w for w in warnings)


def test_fuzz_compressed_image_and_sparse_points(tmp_path):
    diag, log = fuzz_node(tmp_path, {'image_transport': 'compressed',
                                     'alignment.source': 'sparse_points'},
                          CompressedImage, 'image/compressed', PointCloud2, 'sparse_points',
                          bad_compressed, bad_points, fuzz_info=False)
    assert rejected(diag, 'image_') >= 0.8 * N, diag
    assert rejected(diag, 'sparse_') >= 0.5 * N, diag
    assert 'Traceback' not in log
