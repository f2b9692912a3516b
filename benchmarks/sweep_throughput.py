r"""Study throughput: runs per hour one run at a time (group_size 1) vs seeds in groups.

For each scale, one pre-training is made first (not counted); then the same study (the targets
and families asked for, `--seeds` seeds) runs once per mode, each in a fresh process with an
empty compilation cache (what a first study pays), and the modes alternate when repeated so
that a noisy machine hurts them alike. Runs per hour = runs / wall time of the study process
(start-up, compilation, training, evaluation, checkpoints, writing and the report); the
breakdown columns are the mean per run of the `time` that every results.json records.

Modes: `sequential` (study.group_size=1), `grouped` (all seeds in one group, lanes by backend:
one run per lane on CPU, all in one vmapped lane on accelerators), `grouped-vmap` (all seeds
in one vmapped lane whatever the backend); `--compare_root=DIR` adds `DIR`, the same study run
by another checkout of unet_jax (e.g. before a change; quick scale, no group fields).

  python benchmarks/sweep_throughput.py                        # quick and medium, 3 seeds
  python benchmarks/sweep_throughput.py --scales=quick --repeats=2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = {
    'sequential': ['--config.study.group_size=1'],
    'grouped': ['--config.study.group_size=0', '--config.study.vectorize=auto'],
    'grouped-vmap': ['--config.study.group_size=0', '--config.study.vectorize=vmap'],
}
# Medium: the `:medium` model and image size on the simulated targets (no data needed); fewer
# steps than the real study, which changes no per-step cost.
SCALES = {
    'quick': [
        '--config=configs/layerwise.py:quick,targets={targets},seeds={seeds},families={families}'
    ],
    'medium': [
        '--config=configs/layerwise.py:medium,targets={targets},seeds={seeds},families={families}',
        '--config.num_train_steps={steps}',
        '--config.study.pretrain.num_train_steps={steps}',
    ],
}
SECTIONS = ('compile_s', 'steps_s', 'eval_s', 'checkpoint_s', 'write_s', 'setup_s')


def study_command(scale: str, args, workdir: str, extra: list[str]) -> list[str]:
    fields = dict(
        seeds=args.seeds, families=args.families, targets=args.targets, steps=args.medium_steps
    )
    config = [a.format(**fields) for a in SCALES[scale]]
    return [sys.executable, '-m', 'unet_jax.main', *config, f'--workdir={workdir}', *extra]


def run(command: list[str], cache: str, root: str = ROOT, deadline: float | None = None) -> float:
    """Wall seconds of one study process; it is killed at `deadline` (time.time()), if given."""
    env = dict(os.environ, PYTHONPATH=root)
    start = time.time()
    done = subprocess.run(
        [*command, f'--compilation_cache={cache}'],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=None if deadline is None else max(1.0, deadline - start),
    )
    if done.returncode:
        sys.exit(f'benchmark: {" ".join(command)} failed:\n{done.stderr[-3000:]}')
    return time.time() - start


def per_run_times(workdir: str) -> tuple[int, dict[str, float]]:
    """Number of trained runs and the mean of each time section over them."""
    totals, count = dict.fromkeys(SECTIONS, 0.0), 0
    for folder, _, files in os.walk(os.path.join(workdir, 'points')):
        if 'results.json' in files:
            with open(os.path.join(folder, 'results.json')) as f:
                time_share = json.load(f).get('time', {})
            count += 1
            for key in SECTIONS:
                totals[key] += time_share.get(key, 0.0)
    return count, {k: v / max(count, 1) for k, v in totals.items()}


def test_dice_by_run(workdir: str) -> dict[str, float]:
    """{run folder relative to points/: test Dice} of every finished run."""
    scores = {}
    points = os.path.join(workdir, 'points')
    for folder, _, files in os.walk(points):
        if 'results.json' in files:
            with open(os.path.join(folder, 'results.json')) as f:
                scores[os.path.relpath(folder, points)] = json.load(f)['test']['dice']
    return scores


def largest_difference(a: dict[str, float], b: dict[str, float]) -> tuple[int, float]:
    """(runs in both, largest |test Dice difference| between them): grouping must not change
    what a run learns."""
    shared = sorted(set(a) & set(b))
    return len(shared), max((abs(a[k] - b[k]) for k in shared), default=float('nan'))


def modes_of(args) -> list[str]:
    return args.modes.split(',') + ([args.compare_root] if args.compare_root else [])


def measure(args, root: str, deadline: float | None = None) -> list[dict]:
    """One row per study process run: scale, mode, runs, wall, test Dice per run, time sections.

    Raises subprocess.TimeoutExpired once `deadline` (time.time()) has passed.
    """
    os.environ.setdefault('UNET_JAX_DATA_DIR', os.path.join(root, 'data'))
    modes = modes_of(args)
    rows = []
    for scale in args.scales.split(','):
        pretrain = os.path.join(root, scale, 'pretrain')
        print(f'{scale}: pre-training in {pretrain} (not counted)', flush=True)
        run(
            study_command(scale, args, os.path.join(root, scale, 'p'), ['--sweep_index=pretrain']),
            os.path.join(root, scale, 'cache-pretrain'),
            deadline=deadline,
        )
        os.replace(os.path.join(root, scale, 'p', 'pretrain'), pretrain)
        order = [m for r in range(args.repeats) for m in (modes if r % 2 == 0 else modes[::-1])]
        for i, mode in enumerate(order):
            if mode not in MODES and scale != 'quick':
                continue  # another checkout may not know the other scales
            workdir = os.path.join(root, scale, f'{os.path.basename(mode)}-{i}')
            extra = [*MODES.get(mode, []), f'--config.study.pretrained_workdir={pretrain}']
            command = study_command(scale, args, workdir, extra)
            cache = os.path.join(workdir, 'cache')
            wall = run(command, cache, mode if mode not in MODES else ROOT, deadline)
            count, times = per_run_times(workdir)
            rows.append(
                dict(
                    scale=scale,
                    mode=mode,
                    runs=count,
                    wall=wall,
                    dice=test_dice_by_run(workdir),
                    **times,
                )
            )
            print(f'  {mode}: {count} runs in {wall:.0f} s', flush=True)
    return rows


def summarise(rows: list[dict], modes: list[str]) -> list[dict]:
    """Per scale and mode: runs, mean wall, runs/hour, speed-up over the first mode and the
    mean per-run time sections (over the repeats)."""
    summary = []
    for scale in dict.fromkeys(r['scale'] for r in rows):
        mine = [r for r in rows if r['scale'] == scale]
        base = [r['runs'] / r['wall'] for r in mine if r['mode'] == modes[0]]
        base_rate = sum(base) / len(base) if base else float('nan')
        for mode in modes:
            same = [r for r in mine if r['mode'] == mode]
            if not same:
                continue
            rate = sum(r['runs'] / r['wall'] for r in same) / len(same)
            mean = {k: sum(r[k] for r in same) / len(same) for k in ('wall', *SECTIONS)}
            summary.append(
                dict(
                    scale=scale,
                    mode=mode,
                    runs=same[0]['runs'],
                    runs_per_hour=3600 * rate,
                    speed_up=rate / base_rate,
                    **mean,
                )
            )
    return summary


def dice_differences(rows: list[dict]) -> list[dict]:
    """Per scale, every later study against the first: runs in both and the largest test Dice
    difference."""
    found = []
    for scale in dict.fromkeys(r['scale'] for r in rows):
        mine = [r for r in rows if r['scale'] == scale]
        for other in mine[1:]:
            shared, diff = largest_difference(mine[0]['dice'], other['dice'])
            found.append(
                dict(scale=scale, mode=other['mode'], base=mine[0]['mode'], runs=shared, diff=diff)
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--scales', default='quick,medium')
    parser.add_argument('--modes', default='sequential,grouped')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--families', default='full+contracting+expanding')
    parser.add_argument('--targets', default='us+xray')
    parser.add_argument('--medium_steps', type=int, default=100)
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--workdir', default='')
    parser.add_argument('--compare_root', default='', help='another checkout to time as well')
    args = parser.parse_args()
    root = args.workdir or tempfile.mkdtemp(prefix='sweep_throughput_')
    rows = measure(args, root)
    print()
    print(
        '| scale | mode | runs | wall s | runs/hour | speed-up | per run: compile | steps '
        '| eval | checkpoint | write | setup |'
    )
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for s in summarise(rows, modes_of(args)):
        cells = ' | '.join(f'{s[k]:.2f}' for k in SECTIONS)
        print(
            f'| {s["scale"]} | {s["mode"]} | {s["runs"]} | {s["wall"]:.0f} | '
            f'{s["runs_per_hour"]:.0f} | {s["speed_up"]:.2f}x | {cells} |'
        )
    print()
    for d in dice_differences(rows):
        print(
            f'{d["scale"]}: {d["mode"]} vs {d["base"]}: largest test Dice difference '
            f'{d["diff"]:.2e} over {d["runs"]} runs'
        )


if __name__ == '__main__':
    main()
