"""The package's import rules: imports flow one way, from the entry point down to the config.

Read from the source with `ast` (every import, lazy ones inside functions included), so that a
new import that breaks a rule fails here before it can become a cycle at run time.
"""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'unet_jax'

# Each part of unet_jax and its rank: a part imports only parts of a lower rank (and itself).
# Parts of one rank are independent of each other.
RANKS = {
    'unet_jax.errors': 0,  # user errors and exit codes
    'unet_jax.io_utils': 0,  # atomic writes and other small helpers
    'unet_jax.layout': 1,  # where a study keeps its files
    'unet_jax.console': 2,  # what a study prints
    'unet_jax.data': 3,  # the catalogue, simulations, builders, folder sets, the pipeline, splits
    'unet_jax.config': 4,  # defaults, study scales, target sets, checks, families, registration
    'unet_jax.models': 5,  # the U-Net, its layer registry, losses and scores
    'unet_jax.freeze': 6,  # specs, plans, the optimiser mask, adapters, auto choice, criteria
    'unet_jax.train': 7,  # one run and one group
    'unet_jax.find_run': 8,  # the tools
    'unet_jax.representation_change': 8,
    'unet_jax.report': 8,
    'unet_jax.predict': 9,  # inputs, model, outputs, scores; the command in __main__
    'unet_jax.study': 10,  # the sweep and its configurations, its checks, its runner and loop
    'unet_jax.main': 11,  # the entry point
}
# What `import unet_jax.config` (and so every file in configs/) may never load.
HEAVY = ('jax', 'flax', 'optax', 'tensorflow', 'tensorflow_datasets', 'orbax', 'clu')


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in PACKAGE.rglob('*.py'):
        parts = list(path.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts.pop()
        found['.'.join(parts)] = path
    return found


def imported(name: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    """The unet_jax modules that module `name` imports, at the top or inside a function."""
    is_package = path.name == '__init__.py'
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                here = name.split('.') if is_package else name.split('.')[:-1]
                base = '.'.join(here[: len(here) - node.level + 1] + ([base] if base else []))
            # `from package import module` imports the module; `from module import name`, the
            # module.
            targets = [
                f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition('.')[0]
            if target.startswith('unet_jax') and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def part(name: str) -> str:
    for candidate in sorted(RANKS, key=len, reverse=True):
        if name == candidate or name.startswith(candidate + '.'):
            return candidate
    return ''


def upward(edges: dict[str, set[str]]) -> list[str]:
    """The imports of `edges` that go to a part of the same or a higher rank."""
    wrong = []
    for name, targets in edges.items():
        for target in targets:
            mine, theirs = part(name), part(target)
            if name != 'unet_jax' and mine != theirs and RANKS[theirs] >= RANKS[mine]:
                wrong.append(f'{name} (rank {RANKS[mine]}) imports {target} (rank {RANKS[theirs]})')
    return sorted(wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle of `edges` found by a depth-first search (one per back edge)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_every_module_has_a_rank():
    unranked = sorted(name for name in modules() if name != 'unet_jax' and not part(name))
    assert not unranked, f'add these to RANKS in {__file__}: {unranked}'


def test_no_part_imports_one_above_it_or_beside_it():
    wrong = upward(graph())
    assert not wrong, 'imports must flow down:\n  ' + '\n  '.join(wrong)


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, 'import cycles:\n  ' + '\n  '.join(' -> '.join(c) for c in found)


def test_the_rules_catch_a_cycle_an_upward_and_a_sideways_import():
    """The two checks on made-up graphs: what the layout had before (config -> study ->
    leak check -> config), an upward import and one between parts of the same rank."""
    old = {
        'unet_jax.config.a': {'unet_jax.study.b'},
        'unet_jax.study.b': {'unet_jax.data.c'},
        'unet_jax.data.c': {'unet_jax.config.a'},
    }
    assert cycles(old) == [
        ['unet_jax.config.a', 'unet_jax.study.b', 'unet_jax.data.c', 'unet_jax.config.a']
    ]
    assert upward(old) == [
        'unet_jax.config.a (rank 4) imports unet_jax.study.b (rank 10)',
        'unet_jax.data.c (rank 3) imports unet_jax.config.a (rank 4)',
    ]
    assert upward({'unet_jax.report.x': {'unet_jax.representation_change'}}) == [
        'unet_jax.report.x (rank 8) imports unet_jax.representation_change (rank 8)'
    ]
    assert upward({'unet_jax.train.x': {'unet_jax.train.y', 'unet_jax.models.z'}}) == []
    assert cycles({'unet_jax.a': {'unet_jax.b'}, 'unet_jax.b': set()}) == []
    assert part('unet_jax.configs') == ''  # a prefix of a name is not its part


def test_imports_are_read_lazy_ones_and_relative_ones_included(tmp_path):
    path = tmp_path / 'x.py'
    path.write_text(
        'from unet_jax import errors\n'
        'from unet_jax.train import steps as s\n'
        'def f():\n'
        '    from unet_jax.models.unet import UNet\n'
        '    from . import y\n'
    )
    known = {n: path for n in ('unet_jax.errors', 'unet_jax.train.steps', 'unet_jax.models.unet',
                               'unet_jax.train.y', 'unet_jax.train.x')}  # fmt: skip
    assert imported('unet_jax.train.x', path, known) == {
        'unet_jax.errors',
        'unet_jax.train.steps',
        'unet_jax.models.unet',
        'unet_jax.train.y',
    }


def test_config_imports_no_jax_and_no_tfds():
    """Every module of unet_jax.config in a fresh interpreter (tests/test_config.py makes every
    file of configs/ the same way)."""
    config_modules = sorted(name for name in modules() if part(name) == 'unet_jax.config')
    code = (
        'import importlib, sys\n'
        f'for name in {config_modules!r}: importlib.import_module(name)\n'
        f'print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))\n'
    )
    loaded = subprocess.run(
        [sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert len(config_modules) > 3 and loaded == '[]', f'unet_jax.config loads {loaded}'
