"""The command every process of a launched study runs, and the environment it runs in.

Every process is `python -m unet_jax.main --config=... --workdir=W --sweep_index=I`, with the
launcher's --config arguments passed on verbatim. Its environment is the launcher's as it was
when this module was first imported (launch/sweep.py imports it before it pins JAX to the CPU
for its own use).
"""

import os
import shlex
import sys

# The environment the runs get: captured before launch/sweep.py changes its own.
CHILD_ENV = dict(os.environ)


def config_args(argv: list[str]) -> list[str]:
    """The --config arguments of this command line, to pass on verbatim to every process."""
    out, i = [], 1
    while i < len(argv):
        arg = argv[i]
        if arg == '--config' or (arg.startswith('--config.') and '=' not in arg):
            out.append(f'{arg}={argv[i + 1]}')
            i += 2
            continue
        if arg.startswith('--config=') or arg.startswith('--config.'):
            out.append(arg)
        i += 1
    return out


def base_command(args: list[str], workdir: str) -> list[str]:
    return [sys.executable, '-m', 'unet_jax.main', *args, f'--workdir={workdir}']


def main_command(args: list[str], workdir: str, sweep_index: str) -> list[str]:
    return base_command(args, workdir) + [f'--sweep_index={sweep_index}']


def shell(command: list[str]) -> str:
    return ' '.join(shlex.quote(c) for c in command)
