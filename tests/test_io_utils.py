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


def test_progress_eta_weighs_items_by_their_work(monkeypatch):
    """A cheap first item (an evaluation-only run) does not make the costly ones look cheap:
    the ETA is the work left at the rate of work done."""
    now = [1000.0]
    monkeypatch.setattr(io_utils.time, 'time', lambda: now[0])
    by_items = io_utils.Progress(3, unit='runs')
    by_work = io_utils.Progress(3, unit='runs', work_total=10 + 110 + 110)
    now[0] += 1.0  # the first run (work 10) took 1 s
    assert by_items.line(1).endswith('ETA 0m02s')
    assert by_work.line(1, work_done=10).endswith('ETA 0m22s')
    resumed = io_utils.Progress(3, done=1, unit='runs', work_total=230, work_done=10)
    now[0] += 11.0  # the second (work 110) took 11 s in this process
    assert resumed.line(2, work_done=120).endswith('ETA 0m11s')
