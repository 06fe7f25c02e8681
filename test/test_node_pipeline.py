"""
The running node's two-stage pipeline against the serial FrameProcessor, bit for bit.

A delayed model double, frames sent faster than it answers, drop_frames false: inference of one
frame overlaps the finishing of the one before, yet every frame comes out, in order, with its
stamp, and every output carries exactly the bytes the serial path gives for the same inputs.
"""

import time

from message_content import message_content as decoded  # noqa: E402
from node_harness import (
    Client,
    NodeProcess,
    camera_info,
    diagnostics_values,
    header_at,
    next_domain,
    wait_until_ready,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from lotus_ros.benchmarks.model_double import ModelDouble, save_truth
from lotus_ros.demo.synthetic import render_sequence
from lotus_ros.ros.frame_assembly import FrameInputs
from lotus_ros.ros.images import array_to_image
from lotus_ros.ros.processor import FrameProcessor

W, H = 160, 120
N = 12
PARAMS = {'drop_frames': False, 'queue_size': 50, 'lazy': False, 'points.normals': True,
          'points.layout': 'compact'}
TOPICS = {'depth/image': Image, 'depth/camera_info': CameraInfo, 'depth/relative': Image,
          'depth/colored': Image, 'normal/image': Image, 'normal/colored': Image,
          'points': PointCloud2}


def test_pipelined_node_equals_serial_processor(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from lotus_ros.msg import DepthAlignment

    frames = render_sequence(N, width=W, height=H, scene='room', seed=11)
    truth = tmp_path / 'truth.npz'
    save_truth(frames, truth)
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, PARAMS,
                       env={'LOTUS_DOUBLE_TRUTH': str(truth), 'LOTUS_DOUBLE_DELAY': '0.08'})
    client = Client(domain)
    topics = dict(TOPICS, alignment=DepthAlignment)
    try:
        for name, typ in topics.items():
            client.subscribe(typ, name)
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub_img = client.publisher(Image, 'image')
        pub_info = client.publisher(CameraInfo, 'camera_info')
        pub_sparse = client.publisher(Image, 'sparse_depth')
        wait_until_ready(client, node, pub_img, pub_info, pub_sparse)
        for f in frames:            # every 30 ms: faster than the 80 ms model
            hdr = header_at(f.stamp)
            pub_info.publish(camera_info(f.k, f.width, f.height, hdr))
            pub_sparse.publish(array_to_image(f.sparse_depth, '32FC1', hdr))
            time.sleep(0.01)
            pub_img.publish(array_to_image(f.rgb, 'rgb8', hdr))
            time.sleep(0.02)
        assert client.wait_for_counts({t: N for t in topics}, 60), \
            {t: len(client.messages(t)) for t in topics}
        client.wait_for(lambda: diagnostics_values(client).get('frames_processed') == str(N), 5)
        got = {t: client.messages(t) for t in topics}
        diag = diagnostics_values(client)
    finally:
        client.close()
        node.stop()

    sent = [(header_at(f.stamp).stamp.sec, header_at(f.stamp).stamp.nanosec) for f in frames]
    for topic, msgs in got.items():
        assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in msgs] == sent, topic
    assert diag['frames_dropped'] == '0' and diag['queue_overflows'] == '0', diag
    assert float(diag['stage_inference_ms']) >= 80.0 and 'stage_publish_ms' in diag, diag

    proc = FrameProcessor(ModelDouble(truth_path=str(truth)), PARAMS)
    for i, f in enumerate(frames):
        hdr = header_at(f.stamp)
        res = proc.process(FrameInputs(array_to_image(f.rgb, 'rgb8', hdr),
                                       camera_info(f.k, f.width, f.height, hdr),
                                       array_to_image(f.sparse_depth, '32FC1', hdr)))
        assert set(res.outputs) == set(topics), i
        for topic, msg in res.outputs.items():
            assert decoded(got[topic][i]) == decoded(msg), (i, topic)


def test_time_jump_resets_while_frames_are_in_flight(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from lotus_ros.msg import DepthAlignment

    frames = render_sequence(8, width=W, height=H, scene='room', seed=12)
    truth = tmp_path / 'truth.npz'
    save_truth(frames, truth)
    # the second half replays from 60 s earlier (a bag loop), its first frame sent while the
    # first half is still in flight
    stamps = [100.0 + 0.1 * i for i in range(4)] + [40.0 + 0.1 * i for i in range(4)]
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, PARAMS,
                       env={'LOTUS_DOUBLE_TRUTH': str(truth), 'LOTUS_DOUBLE_DELAY': '0.08'})
    client = Client(domain)
    try:
        client.subscribe(Image, 'depth/relative')
        client.subscribe(DepthAlignment, 'alignment')
        client.subscribe(DiagnosticArray, '/diagnostics')
        pub_img = client.publisher(Image, 'image')
        pub_info = client.publisher(CameraInfo, 'camera_info')
        pub_sparse = client.publisher(Image, 'sparse_depth')
        wait_until_ready(client, node, pub_img, pub_info, pub_sparse)
        for i, (f, stamp) in enumerate(zip(frames, stamps, strict=True)):
            hdr = header_at(stamp)
            pub_info.publish(camera_info(f.k, f.width, f.height, hdr))
            pub_sparse.publish(array_to_image(f.sparse_depth, '32FC1', hdr))
            time.sleep(0.01)
            pub_img.publish(array_to_image(f.rgb, 'rgb8', hdr))
            if i == 4:
                # the first frame of the new run came behind the old ones; the rest of the new
                # run comes after it was taken (the caches forget what arrived before a frame
                # stamped later than the jump's, so a backlog of new-run messages would go too)
                assert client.wait_for(lambda: len(client.messages('depth/relative')) >= 5, 10)
            time.sleep(0.02)
        assert client.wait_for_counts({'depth/relative': 8, 'alignment': 8}, 60), node.log()
        client.wait_for(lambda: diagnostics_values(client).get('time_jumps') == '1', 5)
        diag = diagnostics_values(client)
        relative = client.messages('depth/relative')
        aligned = client.messages('alignment')
    finally:
        client.close()
        node.stop()
    assert [round(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, 3) for m in relative] == \
        [round(s, 3) for s in stamps]
    assert diag['time_jumps'] == '1' and 'time went backwards' in node.log(), diag
    # the side inputs of the new run were kept: every frame after the jump is metric again
    assert all(a.valid for a in aligned[4:]), [a.valid for a in aligned]
