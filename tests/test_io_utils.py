"""The small shared helpers: stopwatch sections, progress lines."""

import time

from unet_jax import io_utils


def test_stopwatch_sections_nest_without_counting_twice():
    watch = io_utils.Stopwatch()
    with watch('eval'):
        time.sleep(0.02)
        with watch('compile'):
            time.sleep(0.05)
    assert watch.seconds['compile'] >= 0.05
    assert 0.02 <= watch.seconds['eval'] < 0.05


def test_progress_counts_only_this_process_items():
    progress = io_utils.Progress(100, done=40, unit='steps')
    assert progress.line(40).startswith('40/100 steps') and progress.line(40).endswith('ETA ?')
    time.sleep(0.05)
    line = progress.line(50)
    assert line.startswith('50/100 steps') and 'ETA 0m0' in line
