"""The node benchmark's several-camera path, briefly against the real node (tables, no speed)."""

import re

from node_harness import next_domain
import pytest

from lotus_ros.benchmarks.node_benchmark import ideal_total_rate, main


def test_ideal_rate_is_the_cameras_or_full_batches_whichever_is_less():
    # 3 cameras, one call of 3 costs 30 + 3 * 10 ms: 50 Hz possible, the cameras send 30
    assert ideal_total_rate(10.0, 3, 0.03, 0.01, 4) == pytest.approx(30.0)
    # no batching: one image per 40 ms call
    assert ideal_total_rate(10.0, 3, 0.03, 0.01, 1) == pytest.approx(25.0)
    # 8 cameras, batches of at most 4: 4 images per 70 ms
    assert ideal_total_rate(10.0, 8, 0.03, 0.01, 4) == pytest.approx(4 / 0.07)
    assert ideal_total_rate(30.0, 1, 0.0, 0.0, 4) == pytest.approx(30.0)


def test_two_cameras_give_a_table_line_each(capsys):
    assert main(['--cameras', '2', '--rate', '5', '--width', '64', '--height', '48',
                 '--duration', '2', '--warmup', '1', '--model-delay', '0.01',
                 '--model-delay-per-image', '0.005',
                 '--domain-id', str(next_domain())]) == 0
    out = capsys.readouterr().out
    rows = [line.split('|') for line in out.splitlines() if re.match(r'\| cam\d', line)]
    assert [row[1].strip() for row in rows] == ['cam0', 'cam1']
    assert all(float(row[2]) > 0 for row in rows)  # every camera's outputs arrived
    assert '| batch of ' in out  # the engine status was read
