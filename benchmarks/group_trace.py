r"""Which project files one fine-tuning group's life passes through (a measure of the layout, not
of speed).

A tiny group (2 seeds, freeze spec dec0,head, the test suite's tiny U-Net and disk images) is
trained once untraced (imports and compilation), then again under `sys.setprofile`. Every
function of the package called inside `train_group` is counted at its first call, in call
order; the files of that sequence, and how often it comes back to a file it had already left,
are printed with the files in order of first use.

  python benchmarks/group_trace.py                    # this checkout
  python benchmarks/group_trace.py --repo=/tmp/old    # another checkout (e.g. a git worktree)

A checkout from before the package split (`unet_jax/train.py`, `unet_jax/groups.py`) is
traced as well, so that both layouts are counted the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def first_calls(repo: str) -> list[str]:
    """The package files of every function first called in one group's training, in order."""
    sys.path.insert(0, repo)
    from tests import tiny

    try:
        from unet_jax.train import trainer
        from unet_jax.train.groups import Member
    except ImportError:  # the layout before the package split
        from unet_jax.groups import Member

        from unet_jax import train as trainer

    package = os.path.join(repo, 'unet_jax') + os.sep
    workdir = tempfile.mkdtemp()
    splits = tiny.disk_splits()

    def members(tag: str) -> list:
        return [
            Member(
                tiny.tiny_config(seed=s, **{'finetune.train': 'dec0,head'}),
                os.path.join(workdir, f'{tag}{s}'),
                name=f's{s}',
            )
            for s in (0, 1)
        ]

    def train(group: list, tag: str) -> None:
        trainer.train_group(
            group, os.path.join(workdir, f'{tag}_state'), name='g', splits_fn=lambda c: splits
        )

    train(members('warm'), 'warm')
    traced = members('traced')  # made before the trace: only train_group is traced
    seen: set[tuple] = set()
    files: list[str] = []

    def profile(frame, event, arg):
        if event != 'call' or not frame.f_code.co_filename.startswith(package):
            return
        key = (frame.f_code.co_filename, frame.f_code.co_name, frame.f_code.co_firstlineno)
        if key not in seen:
            seen.add(key)
            files.append(os.path.relpath(frame.f_code.co_filename, package))

    sys.setprofile(profile)
    try:
        train(traced, 'traced')
    finally:
        sys.setprofile(None)
    return files


def returns(files: list[str]) -> int:
    """How often the sequence enters a file it had already left."""
    count, left, previous = 0, set(), None
    for name in files:
        if name != previous:
            count += name in left
            if previous is not None:
                left.add(previous)
            previous = name
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(os.path.dirname(__file__)) or '.')
    args = parser.parse_args()
    files = first_calls(os.path.abspath(args.repo))
    distinct = list(dict.fromkeys(files))
    print(
        f'{len(files)} functions in {len(distinct)} files, '
        f'{returns(files)} returns to a file already left'
    )
    print('files in order of first use: ' + ' '.join(distinct))


if __name__ == '__main__':
    main()
