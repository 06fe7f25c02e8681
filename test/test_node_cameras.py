"""
Several cameras in one node process (issue 12): isolation, batching, stalls, lazy, one engine.

Each camera gets its own synthetic scene with exact truth; the model double answers every frame
with that frame's true disparity (LOTUS_DOUBLE_NOISE=0: exactly), so an output carrying another
camera's content, header or stamp shows. The double's report (LOTUS_DOUBLE_REPORT) counts the
engines built and the images of every model call.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
import time

from node_harness import (
    HERE,
    Client,
    NodeProcess,
    camera_info,
    next_domain,
    set_parameters,
    wait_until_ready,
)
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from lotus_ros.benchmarks.model_double import relative_disparity, save_truth
from lotus_ros.core.stamps import stamp_to_ns
from lotus_ros.demo.synthetic import render_sequence
from lotus_ros.ros import messages
from lotus_ros.ros.images import array_to_image, image_to_array

W, H = 64, 48
CAMERAS = ('front', 'left', 'right')
PERIOD = 0.1  # s between the frames of one camera
# per camera: scene, seed, metric scale of its world, its first stamp (offset: no stamp shared)
SCENES = {'front': ('room', 1, 1.0, 1000.00),
          'left': ('room', 2, 2.0, 1000.03),
          'right': ('outdoor', 3, 1.0, 1000.06),
          'stereo/left': ('room', 4, 0.5, 1000.05)}


def frame_id(camera: str) -> str:
    return f"{camera.replace('/', '_')}_optical"


def camera_frames(camera: str, n: int) -> list:
    """Return n frames of the camera's own scene, its world scaled (a metric truth of its own)."""
    scene, seed, scale, start = SCENES[camera]
    frames = render_sequence(n, width=W, height=H, scene=scene, seed=seed, fps=1.0 / PERIOD,
                             start_stamp=start)
    return [dataclasses.replace(f, depth=f.depth * scale, sparse_depth=f.sparse_depth * scale)
            for f in frames]


def stamp_key(stamp: float) -> int:
    return stamp_to_ns(messages.header_at(stamp, '').stamp)


def key(msg) -> int:
    return stamp_to_ns(msg.header.stamp)


class Rig:
    """The node serving some cameras, a client publishing each camera's inputs, the report."""

    def __init__(self, tmp_path: Path, params: dict, *, subscribe: dict[str, dict[str, type]],
                 cameras=CAMERAS, env: dict | None = None, truth: list | None = None,
                 sparse=True):
        self.cameras = tuple(cameras)
        self.report_path = tmp_path / 'double.json'
        env = {'LOTUS_DOUBLE_REPORT': str(self.report_path), 'LOTUS_DOUBLE_NOISE': '0',
               **(env or {})}
        if truth:
            save_truth(truth, tmp_path / 'truth.npz')
            env['LOTUS_DOUBLE_TRUTH'] = str(tmp_path / 'truth.npz')
        domain = next_domain()
        self.node = NodeProcess(tmp_path, domain, {'cameras': list(self.cameras), **params},
                                env=env)
        self.client = Client(domain)
        from diagnostic_msgs.msg import DiagnosticArray
        self.client.subscribe(DiagnosticArray, '/diagnostics')
        for c, topics in subscribe.items():
            for name, msg_type in topics.items():
                self.client.subscribe(msg_type, f'/{c}/{name}')
        self.pubs = {}
        for c in self.cameras:
            self.pubs[c] = {'image': self.client.publisher(Image, f'/{c}/image'),
                            'camera_info': self.client.publisher(CameraInfo, f'/{c}/camera_info')}
            if sparse is True or c in (sparse or ()):  # True: every camera
                self.pubs[c]['sparse_depth'] = self.client.publisher(Image, f'/{c}/sparse_depth')

    def ready(self, timeout: float = 30.0) -> None:
        """Wait for the node, its subscriptions and our subscriptions' matches with it."""
        wait_until_ready(self.client, self.node,
                         *[p for pubs in self.pubs.values() for p in pubs.values()],
                         timeout=timeout)

    def publish(self, camera: str, frame, *, image: Image | None = None) -> None:
        """Send a frame's camera_info and sparse depth, then its image (or `image`)."""
        hdr = messages.header_at(frame.stamp, frame_id(camera))
        pubs = self.pubs[camera]
        pubs['camera_info'].publish(camera_info(frame.k, W, H, hdr))
        if 'sparse_depth' in pubs:
            pubs['sparse_depth'].publish(array_to_image(frame.sparse_depth, '32FC1', hdr))
        pubs['image'].publish(image or array_to_image(frame.rgb, 'rgb8', hdr))

    def play(self, frames: dict[str, list], rounds, *, skip=(), images=None) -> None:
        """Publish frame i of every camera (but `skip`) per round, one round per PERIOD."""
        start = time.monotonic()
        for n, i in enumerate(rounds):
            for c, seq in frames.items():
                if c not in skip:
                    self.publish(c, seq[i], image=None if images is None else images(c, seq[i]))
            time.sleep(max(0.0, start + PERIOD * (n + 1) - time.monotonic()))

    def messages(self, camera: str, name: str) -> list:
        return self.client.messages(f'/{camera}/{name}')

    def wait_for_counts(self, counts: dict[str, int], timeout: float = 30.0) -> bool:
        return self.client.wait_for_counts({f'/{t}': n for t, n in counts.items()}, timeout)

    def why(self) -> str:
        """Return the messages received per topic and the node's log, for a failure message."""
        counts = {t: self.client.count(t) for t in self.client.received if t != '/diagnostics'}
        return f'{counts}\n{self.node.log()}'

    def report(self) -> dict:
        return json.loads(self.report_path.read_text())

    def statuses(self) -> dict[str, dict[str, str]]:
        """Return the newest key/values of every /diagnostics status, by status name."""
        out = {}
        for arr in self.client.messages('/diagnostics'):
            for st in arr.status:
                out[st.name] = {kv.key: kv.value for kv in st.values}
        return out

    def status(self, name: str) -> dict[str, str]:
        return self.statuses().get(name, {})

    def wait_for_status(self, name: str, key: str, value: str, timeout: float = 5.0) -> bool:
        """Wait for a /diagnostics period that reports `value` (the counters trail the topics)."""
        return self.client.wait_for(lambda: self.status(name).get(key) == value, timeout)

    def set_parameters(self, values: dict) -> list:
        return set_parameters(self.client, values)

    def close(self) -> None:
        self.client.close()
        self.node.stop()


@pytest.fixture
def rig(tmp_path):
    """Start a Rig (closed at the end of the test)."""
    started = []

    def start(params: dict, **kwargs) -> Rig:
        r = Rig(tmp_path, params, **kwargs)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def batch_sizes(report: dict) -> dict[int, int]:
    return {int(n): calls for n, calls in report['batch_sizes'].items()}


CONTENT = {'depth/image': Image, 'depth/camera_info': CameraInfo, 'depth/relative': Image,
           'normal/image': Image, 'points': PointCloud2}


def test_three_cameras_keep_their_headers_content_and_alignment(rig):
    from lotus_ros.msg import DepthAlignment

    n = 8
    frames = {c: camera_frames(c, n) for c in CAMERAS}
    topics = dict(CONTENT, alignment=DepthAlignment)
    r = rig({'drop_frames': False, 'lazy': False},
            subscribe={c: topics for c in CAMERAS},
            truth=[f for seq in frames.values() for f in seq])
    r.ready()
    # The node does not wait for the sparse depth of a camera's first frame (nothing says it
    # is coming) and the topics may deliver out of order: have it there, so every frame is metric.
    for c in CAMERAS:
        first = frames[c][0]
        r.pubs[c]['sparse_depth'].publish(array_to_image(
            first.sparse_depth, '32FC1', messages.header_at(first.stamp, frame_id(c))))
    time.sleep(0.5)
    r.play(frames, range(n))
    assert r.wait_for_counts({f'{c}/{t}': n for c in CAMERAS for t in topics}), r.why()
    report = r.report()

    for c in CAMERAS:
        sent = {stamp_key(f.stamp): f for f in frames[c]}
        for name in topics:
            got = r.messages(c, name)
            assert [key(m) for m in got] == list(sent), (c, name)  # its stamps, in order
            assert {m.header.frame_id for m in got} == {frame_id(c)}, (c, name)
        for m in r.messages(c, 'depth/relative'):
            f = sent[key(m)]
            # exactly what the double answers for this camera's image of this stamp
            np.testing.assert_allclose(image_to_array(m), relative_disparity(f.depth),
                                       atol=1e-6, err_msg=c)
        for m in r.messages(c, 'normal/image'):
            f = sent[key(m)]
            ok = np.isfinite(f.normal).all(axis=2)
            dots = np.sum(image_to_array(m)[ok] * f.normal[ok], axis=1)
            assert np.mean(dots) > 0.99, c
        for m in r.messages(c, 'depth/camera_info'):
            np.testing.assert_array_equal(np.reshape(m.k, (3, 3)), sent[key(m)].k)
        # the metric fit of each camera converges to its own world's scale
        errors = []
        for m in r.messages(c, 'depth/image')[2:]:
            truth = sent[key(m)].depth
            d = image_to_array(m)
            near = np.isfinite(truth) & (truth < 30.0)
            ok = near & np.isfinite(d)
            assert ok.sum() > 0.9 * near.sum(), c
            errors.append(np.median(np.abs(d[ok] - truth[ok]) / truth[ok]))
        # (LiDAR noise and the filter's lag: a wrong camera's world would be off by 2x)
        assert np.median(errors) < 0.02 and max(errors) < 0.1, (c, errors)
        assert all(a.valid for a in r.messages(c, 'alignment')[2:]), c
    assert (report['constructed'], report['alive']) == (1, 1), report
    assert report['images'] == n * len(CAMERAS), report


def play_triggered(rig, n: int, batch_max_size: int):
    """Three cameras triggered together (one stamp per round) behind a 50 ms model; the rig."""
    frames = {c: [dataclasses.replace(f, stamp=1000.0 + PERIOD * i)
                  for i, f in enumerate(camera_frames(c, n))] for c in CAMERAS}
    r = rig({'drop_frames': False, 'lazy': False, 'alignment.source': 'none',
             'batch.max_size': batch_max_size, 'diagnostics_period': 0.2},
            subscribe={c: {'depth/relative': Image} for c in CAMERAS}, sparse=False,
            env={'LOTUS_DOUBLE_DELAY': '0.05'})
    r.ready()
    r.play(frames, range(n))
    assert r.wait_for_counts({f'{c}/depth/relative': n for c in CAMERAS}), r.why()
    for c in CAMERAS:
        assert [key(m) for m in r.messages(c, 'depth/relative')] == \
            [stamp_key(f.stamp) for f in frames[c]], c
    return r


def test_coinciding_frames_share_a_model_call(rig):
    """Three cameras' frames at once, a 50 ms model: calls of several images, each frame once."""
    n = 10
    r = play_triggered(rig, n, batch_max_size=3)
    images = n * len(CAMERAS)
    assert r.wait_for_status('lotus: engine', 'images', str(images)), r.statuses()
    report, engine = r.report(), r.status('lotus: engine')
    sizes = batch_sizes(report)
    assert sum(size * calls for size, calls in sizes.items()) == images == report['images']
    assert max(sizes) > 1 and max(sizes) <= 3, sizes
    # the node's /diagnostics tell the same batches
    assert {int(k[len('batch_size_'):]): int(v) for k, v in engine.items()
            if k.startswith('batch_size_')} == sizes, engine
    assert report['constructed'] == 1, report


def test_batch_max_size_one_runs_every_frame_alone(rig):
    n = 6
    r = play_triggered(rig, n, batch_max_size=1)
    assert batch_sizes(r.report()) == {1: n * len(CAMERAS)}


def test_a_stalled_camera_does_not_slow_the_others(rig):
    """
    Live mode, 10 Hz each: right stops after 2 s; front and left keep their rate.

    Frames may wait 200 ms for company: waited for, the silent camera would halve the others.
    """
    n1, n2 = 20, 25
    frames = {c: camera_frames(c, n1 + n2) for c in CAMERAS}
    r = rig({'drop_frames': True, 'lazy': False, 'alignment.source': 'none',
             'batch.max_wait_ms': 200.0},
            subscribe={c: {'depth/relative': Image} for c in CAMERAS}, sparse=False,
            env={'LOTUS_DOUBLE_DELAY': '0.03'})
    r.ready()
    r.play(frames, range(n1))
    r.play(frames, range(n1, n1 + n2), skip={'right'})
    time.sleep(1.0)
    for c in CAMERAS:
        got = [key(m) for m in r.messages(c, 'depth/relative')]
        sent = [stamp_key(f.stamp) for f in frames[c]]
        assert got == sorted(set(got)) and set(got) <= set(sent), c  # in order, no strangers
        phase1 = len(set(got) & set(sent[:n1]))
        phase2 = len(set(got) & set(sent[n1:]))
        # newest-wins may drop a frame now and then on a loaded machine, never a third
        assert phase1 >= 0.7 * n1, (c, phase1, phase2)
        if c == 'right':
            assert phase2 == 0
        else:
            assert phase2 >= 0.7 * n2, (c, phase1, phase2)


def test_a_camera_with_bad_images_is_rejected_alone(rig):
    n = 10
    frames = {c: camera_frames(c, n) for c in CAMERAS}
    r = rig({'drop_frames': False, 'lazy': False, 'alignment.source': 'none',
             'diagnostics_period': 0.2},
            subscribe={c: {'depth/relative': Image} for c in CAMERAS}, sparse=False)
    r.ready()

    def images(camera, frame):
        msg = array_to_image(frame.rgb, 'rgb8', messages.header_at(frame.stamp,
                                                                   frame_id(camera)))
        if camera == 'right':
            msg.step = W * 3 - 1  # shorter than a row of rgb8
        return msg

    r.play(frames, range(n), images=images)
    assert r.wait_for_counts({f'{c}/depth/relative': n for c in ('front', 'left')}), \
        r.why()
    assert r.wait_for_status('lotus/right: pipeline', 'rejected_image_step', str(n)), \
        r.statuses()
    for c in ('front', 'left'):
        assert [key(m) for m in r.messages(c, 'depth/relative')] == \
            [stamp_key(f.stamp) for f in frames[c]], c
        assert r.wait_for_status(f'lotus/{c}: pipeline', 'frames_processed', str(n))
        assert r.status(f'lotus/{c}: pipeline')['rejected_total'] == '0'
    assert r.messages('right', 'depth/relative') == []
    assert r.status('lotus/right: pipeline')['frames_processed'] == '0'
    assert r.report()['images'] == 2 * n


def test_lazy_per_camera(rig):
    """Only front's output has a subscriber: only front's frames reach the model."""
    n = 8
    frames = {c: camera_frames(c, 2 * n) for c in CAMERAS}
    r = rig({'drop_frames': False, 'lazy': True, 'alignment.source': 'none',
             'diagnostics_period': 0.2},
            subscribe={'front': {'depth/relative': Image}}, sparse=False)
    r.ready()
    r.play(frames, range(n))
    assert r.wait_for_counts({'front/depth/relative': n}), r.why()
    for c in ('left', 'right'):
        assert r.wait_for_status(f'lotus/{c}: pipeline', 'frames_skipped_lazy', str(n)), \
            r.statuses()
        assert r.status(f'lotus/{c}: pipeline')['frames_processed'] == '0'
    assert r.status('lotus/front: pipeline')['frames_skipped_lazy'] == '0'
    report = r.report()
    assert (report['images'], batch_sizes(report)) == (n, {1: n}), report

    # a subscriber for left: from now on left runs too, right still does not
    sub = r.client.subscribe(Image, '/left/depth/relative')
    assert r.client.wait_for(lambda: sub.get_publisher_count() > 0, 10)
    time.sleep(1.0)  # the node must see the subscription too
    r.play(frames, range(n, 2 * n))
    assert r.wait_for_counts({'front/depth/relative': 2 * n, 'left/depth/relative': n}), \
        r.why()
    assert [key(m) for m in r.messages('left', 'depth/relative')] == \
        [stamp_key(f.stamp) for f in frames['left'][n:]]
    assert r.wait_for_status('lotus/right: pipeline', 'frames_skipped_lazy', str(2 * n))
    assert r.report()['images'] == 3 * n


def test_real_tiny_engine_is_built_once_for_three_cameras(rig, tmp_path, tiny_lotus):
    pytest.importorskip('torch')
    n = 3
    frames = {c: camera_frames(c, n) for c in CAMERAS}
    count_file = tmp_path / 'engines.txt'
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get('PYTHONPATH')) if p)
    r = rig({'drop_frames': False, 'lazy': False, 'alignment.source': 'none',
             'engine_factory': 'engine_counter:make_engine',
             'depth_model': str(tiny_lotus['depth']), 'normal_model': str(tiny_lotus['normal']),
             'device': 'cpu', 'processing_resolution': 64, 'local_files_only': True},
            subscribe={c: {'depth/relative': Image} for c in CAMERAS}, sparse=False,
            env={'PYTHONPATH': path, 'LOTUS_ENGINE_COUNT': str(count_file)})
    r.ready(timeout=90)  # torch and the checkpoints load first
    r.play(frames, range(n))
    assert r.wait_for_counts({f'{c}/depth/relative': n for c in CAMERAS}, 60), r.why()
    assert count_file.read_text().splitlines() == ['LotusEngine'], count_file.read_text()
    relative = {}
    for c in CAMERAS:
        got = r.messages(c, 'depth/relative')
        assert [key(m) for m in got] == [stamp_key(f.stamp) for f in frames[c]], c
        assert {m.header.frame_id for m in got} == {frame_id(c)}
        relative[c] = [image_to_array(m) for m in got]
        assert all(d.shape == (H, W) and np.isfinite(d).all() for d in relative[c])
    # different images, different predictions: no camera was answered with another's
    assert not np.allclose(relative['front'][0], relative['left'][0])


def test_per_camera_parameters(rig):
    """
    Own values at startup and at runtime; a camera without one follows the global value.

    stereo/left has alignment.source none from the start (front aligns); at runtime front gets
    its own publish.normal, then a global change reaches only stereo/left.
    """
    n = 5
    cameras = ('front', 'stereo/left')
    frames = {c: camera_frames(c, 3 * n) for c in cameras}
    topics = {'depth/image': Image, 'depth/relative': Image, 'normal/image': Image}
    r = rig({'drop_frames': False, 'lazy': False,
             'cameras_params.stereo.left.alignment.source': 'none'},
            cameras=cameras, subscribe={c: topics for c in cameras}, sparse={'front'},
            truth=[f for seq in frames.values() for f in seq])
    r.ready()
    phases = [range(0, n), range(n, 2 * n), range(2 * n, 3 * n)]
    changes = [{'cameras_params.front.publish.normal': False},
               {'publish.normal': False, 'cameras_params.front.publish.normal': True}]
    for i, phase in enumerate(phases):
        if i:
            results = r.set_parameters(changes[i - 1])
            assert all(res.successful for res in results), [res.reason for res in results]
        r.play(frames, phase)
        assert r.wait_for_counts({f'{c}/depth/relative': phase.stop for c in cameras}), r.why()
    assert r.wait_for_counts({'front/depth/image': 3 * n}, 5), r.why()
    time.sleep(0.5)  # late normals would show now
    stamps = {c: [stamp_key(f.stamp) for f in frames[c]] for c in cameras}
    assert [key(m) for m in r.messages('front', 'depth/image')] == stamps['front']
    assert r.messages('stereo/left', 'depth/image') == []     # its own alignment.source
    front, left = stamps['front'], stamps['stereo/left']
    assert [key(m) for m in r.messages('front', 'normal/image')] == front[:n] + front[2 * n:]
    assert [key(m) for m in r.messages('stereo/left', 'normal/image')] == left[:2 * n]
    assert {m.header.frame_id for m in r.messages('stereo/left', 'depth/relative')} == \
        {frame_id('stereo/left')}
