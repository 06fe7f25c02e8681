"""Lazy mode, runtime parameters, sim time, model-load failure and clean shutdown (group 5)."""

import signal
import threading
import time

from node_harness import (
    Client,
    NodeProcess,
    diagnostics_values,
    header_at,
    next_domain,
    node_executable,
    set_parameters,
    wait_until_ready,
)
import numpy as np
import pytest
from sensor_msgs.msg import Image

from lotus_ros.ros.images import array_to_image, image_to_array

RGB = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)


class Feeder:
    """Publish images at a fixed rate in the background (a camera)."""

    def __init__(self, pub, rate=20.0, stamp_fn=time.time):
        self.pub, self.period, self.stamp_fn = pub, 1.0 / rate, stamp_fn
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            self.pub.publish(array_to_image(RGB, 'rgb8', header_at(self.stamp_fn())))
            time.sleep(self.period)

    def stop(self):
        self._stop.set()
        self._t.join(2)


def start(tmp_path, params=None, env=None):
    from diagnostic_msgs.msg import DiagnosticArray
    domain = next_domain()
    node = NodeProcess(tmp_path, domain, {'alignment.source': 'none', **(params or {})}, env)
    client = Client(domain)
    client.subscribe(DiagnosticArray, '/diagnostics')
    pub = client.publisher(Image, 'image')
    wait_until_ready(client, node, pub, settle=0.0)
    return node, client, pub


def set_params(client, **values):
    """set_parameters with keyword names: a__b is a.b."""
    return set_parameters(client, {name.replace('__', '.'): v for name, v in values.items()})


def test_lazy_mode_runs_no_inference_without_subscribers(tmp_path):
    node, client, pub = start(tmp_path)
    feeder = Feeder(pub)
    try:
        time.sleep(2.5)
        diag = diagnostics_values(client)
        assert diag['frames_processed'] == '0' and int(diag['frames_skipped_lazy']) > 10, diag
        assert not any(k.startswith('stage_inference') for k in diag)
        client.subscribe(Image, 'depth/relative')
        assert client.wait_for(lambda: len(client.messages('depth/relative')) >= 3, 10)
        assert client.wait_for(
            lambda: int(diagnostics_values(client).get('frames_processed', 0)) > 0, 3)
    finally:
        feeder.stop()
        client.close()
        node.stop()


def test_lazy_turned_off_at_runtime_without_subscribers(tmp_path):
    """Frames skipped lazily still let a pending lazy:=false through (nobody subscribes)."""
    node, client, pub = start(tmp_path)
    feeder = Feeder(pub)
    try:
        assert client.wait_for(lambda: int(diagnostics_values(client).get(
            'frames_skipped_lazy', 0)) > 5, 10)
        assert all(r.successful for r in set_params(client, lazy=False))
        assert client.wait_for(
            lambda: int(diagnostics_values(client).get('frames_processed', 0)) > 3, 10), \
            node.log()
    finally:
        feeder.stop()
        client.close()
        node.stop()


def test_runtime_parameters_accepted_and_rejected(tmp_path):
    node, client, pub = start(tmp_path, {'lazy': False})
    feeder = Feeder(pub)
    try:
        client.subscribe(Image, 'depth/colored')
        client.subscribe(Image, 'depth/relative')
        assert client.wait_for(lambda: len(client.messages('depth/colored')) >= 2, 10)
        first = image_to_array(client.messages('depth/colored')[-1])
        assert not (first[..., 0] == first[..., 1]).all()     # turbo is not grey

        [r] = set_params(client, visualization__colormap='gray')
        assert r.successful, r.reason
        [r] = set_params(client, publish__relative=False)
        assert r.successful, r.reason
        time.sleep(0.5)
        client.clear()
        assert client.wait_for(lambda: len(client.messages('depth/colored')) >= 3, 10)
        grey = image_to_array(client.messages('depth/colored')[-1])
        assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
        assert client.messages('depth/relative') == []

        for values, words in (({'visualization__colormap': 'rainbowz'}, 'one of'),
                              ({'alignment__z_min': 500.0}, 'smaller than'),
                              ({'points__stride': 0}, ''),
                              ({'device': 'cuda'}, ''),
                              ({'alignment__max_age': 'soon'}, '')):
            [r] = set_params(client, **values)
            assert not r.successful, values
            assert words in r.reason and r.reason, (values, r.reason)
        assert node.alive()
    finally:
        feeder.stop()
        client.close()
        node.stop()


def test_sim_time_keeps_input_stamps(tmp_path):
    from rosgraph_msgs.msg import Clock
    node, client, pub = start(tmp_path, {'use_sim_time': True})
    clock_pub = client.publisher(Clock, '/clock')
    sim = [500.0]
    feeder = Feeder(pub, stamp_fn=lambda: sim[0] - 0.05)
    try:
        client.subscribe(Image, 'depth/relative')
        for _ in range(60):
            sim[0] += 0.05
            clock_pub.publish(Clock(clock=header_at(sim[0]).stamp))
            time.sleep(0.05)
        msgs = client.messages('depth/relative')
        assert len(msgs) > 5
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs]
        assert all(495 < s < 510 for s in stamps)                  # input (sim) stamps
        diag = diagnostics_values(client)
        assert 0.0 <= float(diag['latency_p50_s']) < 1.0, diag     # measured on the sim clock
    finally:
        feeder.stop()
        client.close()
        node.stop()


@pytest.mark.parametrize('sig,delay', [(signal.SIGINT, '0.5'), (signal.SIGTERM, '0.5'),
                                       (signal.SIGINT, '5.0')])
def test_clean_shutdown_while_busy(tmp_path, sig, delay):
    node, client, pub = start(tmp_path, {'lazy': False}, env={'LOTUS_DOUBLE_DELAY': delay})
    feeder = Feeder(pub)
    try:
        time.sleep(1.5)   # the worker is inside a slow predict now
    finally:
        feeder.stop()
        client.close()
    rc, took = node.stop(sig)
    assert rc == 0 and took < 2.0, (rc, took, node.log())
    assert 'Traceback' not in node.log()


def test_model_load_failure_exits_with_one_line(tmp_path):
    import subprocess
    node = NodeProcess(tmp_path, next_domain(), env={'LOTUS_DOUBLE_FAIL': '1'})
    rc = node.proc.wait(30)
    lines = [ln for ln in node.log().splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and 'cannot load the model' in lines[0], lines

    t0 = time.monotonic()
    res = subprocess.run(
        [node_executable(), '--ros-args', '-p', f'depth_model:={tmp_path}/missing',
         '-p', "normal_model:=''", '-p', 'local_files_only:=true', '-p', 'device:=cpu'],
        capture_output=True, text=True, timeout=60)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    assert res.returncode != 0 and time.monotonic() - t0 < 30
    assert len(lines) == 1 and 'missing' in lines[0], lines


def test_qos_defaults_and_rep2003_overrides(tmp_path):
    from rclpy.qos import ReliabilityPolicy
    node, client, pub = start(tmp_path, {
        'qos_overrides./camera_info.subscription.reliability': 'reliable',
        'qos_overrides./depth/relative.publisher.depth': 2})
    try:
        def qos(kind, topic):
            get = client.node.get_subscriptions_info_by_topic if kind == 'sub' else \
                client.node.get_publishers_info_by_topic
            infos = [i for i in get(topic) if i.node_name == 'lotus']
            return infos[0].qos_profile if infos else None
        assert client.wait_for(lambda: qos('pub', '/depth/relative') is not None, 10)
        assert qos('sub', '/image').reliability == ReliabilityPolicy.BEST_EFFORT
        assert qos('sub', '/camera_info').reliability == ReliabilityPolicy.RELIABLE
        assert qos('pub', '/depth/image').reliability == ReliabilityPolicy.RELIABLE
    finally:
        client.close()
        node.stop()
