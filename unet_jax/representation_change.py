r"""Which layers a fine-tuning changes: per unit, representation similarity and weight change.

  python -m unet_jax.representation_change RUN_DIR [RUN_DIR ...]
  python -m unet_jax.representation_change STUDY_WORKDIR --families=full
      (every finished run of a family)

For a fine-tuned run (its config.json has `init_from`, the pre-training run) and every unit of
the layer registry, in forward order:

  cka            linear CKA (Kornblith et al., ICML 2019, "Similarity of neural network
                 representations revisited") between the unit's outputs in the pre-trained and
                 in the fine-tuned model, on the target's test images. Examples are pixels: the
                 unit's channel vector at every position of every image is one row of X (pre-
                 trained) and of Y (fine-tuned), as SVCCA/CKA studies of conv nets do, which keeps
                 n (pixels x images) far above the channel count (average pooling would leave
                 one row per image, fewer than the channels, where CKA drifts towards 1). With
                 X, Y column-centred,

                     CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

                 1 when the representation is unchanged up to a rotation and a scale, lower the
                 more it changed (Raghu et al., NeurIPS 2019, used such similarities to show which
                 layers move in transfer to medical images).
  weight_change  ||w_tuned - w_pre|| / ||w_pre|| over all parameters of the unit (0 if frozen).

A frozen unit can still lose similarity: its input changed upstream. Writes
representation_change.json (units in forward order) and representation_change.png (units on
the x axis) into the run folder.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
import json
import math
import os
import sys
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unet_jax import errors, io_utils, layout, models
from unet_jax.data import pipeline
from unet_jax.models import layer_registry
from unet_jax.train import checkpoint

RESULT_FILE = 'representation_change.json'
FIGURE_FILE = 'representation_change.png'


# ----------------------------------------------------------------------------- CKA


class CkaAccumulator:
    """Linear CKA of two representations seen in batches of rows (examples).

    Keeps the column means and the centred (cross-)products, merged batch by batch with the
    pairwise update of Chan et al. (1979), in float64: for batches a and b with n = n_a + n_b,
    C_xy = C_xy,a + C_xy,b + (n_a n_b / n) (mean_x,a - mean_x,b)(mean_y,a - mean_y,b)^T,
    which avoids the cancellation of summing raw products and subtracting n mean mean^T.
    """

    def __init__(self):
        self.n = 0
        self.moments = None  # mean_x, mean_y, C_xx, C_yy, C_xy

    def add(self, x: np.ndarray, y: np.ndarray) -> CkaAccumulator:
        """Adds rows x [n, p] and y [n, q] (the same n examples)."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
            raise ValueError(
                f'CKA needs [n, p] and [n, q] with the same n, got {x.shape}, {y.shape}.'
            )
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        return self.add_moments(len(x), mx, my, xc.T @ xc, yc.T @ yc, xc.T @ yc)

    def add_moments(self, n: int, mean_x, mean_y, cxx, cyy, cxy) -> CkaAccumulator:
        """Adds a batch given by its size, column means and centred (cross-)products."""
        batch = [np.asarray(m, np.float64) for m in (mean_x, mean_y, cxx, cyy, cxy)]
        if self.moments is None:
            self.n, self.moments = n, batch
            return self
        mx, my, cxx_, cyy_, cxy_ = self.moments
        bx, by, bxx, byy, bxy = batch
        total = self.n + n
        w = self.n * n / total
        dx, dy = mx - bx, my - by
        self.moments = [
            mx + (bx - mx) * n / total,
            my + (by - my) * n / total,
            cxx_ + bxx + w * np.outer(dx, dx),
            cyy_ + byy + w * np.outer(dy, dy),
            cxy_ + bxy + w * np.outer(dx, dy),
        ]
        self.n = total
        return self

    def value(self) -> float:
        """CKA in [0, 1]; NaN when a representation is constant (no variance to compare)."""
        if self.moments is None:
            raise ValueError('CKA of no examples: add rows first.')
        _, _, cxx, cyy, cxy = self.moments
        denominator = np.linalg.norm(cxx) * np.linalg.norm(cyy)
        if denominator == 0:
            return math.nan
        return min(float(np.sum(cxy**2) / denominator), 1.0)  # rounding can pass 1


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of x [n, p] and y [n, q] (rows are the same examples)."""
    return CkaAccumulator().add(x, y).value()


# ----------------------------------------------------------------------------- activations


def unit_outputs(model: nn.Module, variables: Mapping[str, Any], images: jax.Array) -> dict:
    """{'enc0/conv0': output, ...}: every unit's output (its __call__), inference mode.

    Units are the modules at depth 2 (block/unit), the same ones the layer registry finds.
    """
    outputs = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == '__call__' and len(context.module.path) == 2:
            outputs['/'.join(context.module.path)] = out
        return out

    with nn.intercept_methods(record):
        model.apply(variables, images, train=False)
    return outputs


def _batch_moments(model, pretrained, tuned, images):
    """Per unit: (mean_x, mean_y, C_xx, C_yy, C_xy) of one batch, pixels x images as rows."""
    before = unit_outputs(model, pretrained, images)
    after = unit_outputs(model, tuned, images)
    moments = {}
    for name, x in before.items():
        x = x.reshape(-1, x.shape[-1])
        y = after[name].reshape(-1, after[name].shape[-1])
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        moments[name] = (mx, my, xc.T @ xc, yc.T @ yc, xc.T @ yc)
    return moments


def representation_similarity(
    model: nn.Module,
    registry: layer_registry.LayerRegistry,
    pretrained: Mapping[str, Any],
    tuned: Mapping[str, Any],
    images: np.ndarray,
    *,
    batch_size: int = 8,
) -> dict[str, float]:
    """Linear CKA per unit (forward order) between two variable sets of one model on `images`."""
    moments_fn = jax.jit(lambda p, t, x: _batch_moments(model, p, t, x))
    accumulators = {name: CkaAccumulator() for name in registry.unit_names}
    for start in range(0, len(images), batch_size):
        batch = jnp.asarray(images[start : start + batch_size])
        for name, moments in jax.device_get(moments_fn(pretrained, tuned, batch)).items():
            rows = len(batch) * math.prod(registry.unit(name).output_shape[:2])
            accumulators[name].add_moments(rows, *moments)
    return {name: accumulators[name].value() for name in registry.unit_names}


def weight_change(
    registry: layer_registry.LayerRegistry, pretrained: Mapping[str, Any], tuned: Mapping[str, Any]
) -> dict[str, float]:
    """||w_tuned - w_pre|| / ||w_pre|| per unit (forward order), over all its parameters."""
    before = flax.traverse_util.flatten_dict(flax.core.unfreeze(pretrained))
    after = flax.traverse_util.flatten_dict(flax.core.unfreeze(tuned))
    change = {}
    for unit in registry.units:
        diff = sum(float(np.sum((after[p] - before[p]) ** 2)) for p in unit.param_paths)
        norm = sum(float(np.sum(before[p] ** 2)) for p in unit.param_paths)
        change[unit.name] = math.sqrt(diff) / max(math.sqrt(norm), 1e-12)
    return change


# ----------------------------------------------------------------------------- a run folder


class AnalyzeError(ValueError):
    """A run folder that cannot be analysed; the message says why and what to do."""


def analyze_run(
    run_dir: str,
    *,
    images: np.ndarray | None = None,
    batch_size: int = 8,
    max_images: int = 0,
    write: bool = True,
) -> dict[str, Any]:
    """CKA and weight change per unit of a fine-tuned run; writes the JSON and the figure.

    `images` defaults to the test split of the run's `config.data` (built/cached as in
    training); `max_images` > 0 keeps the first ones.
    """
    run_dir = os.path.abspath(run_dir)
    config = checkpoint.load_run_config(run_dir)
    pretrained_dir = config.get('init_from') or ''
    if not pretrained_dir:
        raise AnalyzeError(
            f'{run_dir}/config.json has no init_from: the run was trained from scratch, so there '
            'is no pre-trained model to compare it with. Analyse a run fine-tuned from a '
            'pre-training run.'
        )
    model = models.create_model(config['model'])
    in_channels = config['model']['in_channels']
    registry = layer_registry.build_registry(
        model, image_size=config['data']['image_size'], in_channels=in_channels
    )
    tuned, _ = checkpoint.load_variables(run_dir)
    pretrained, _ = checkpoint.load_variables(pretrained_dir)
    if images is None:
        data = ml_collections.ConfigDict(config['data'])
        images = pipeline.load_splits(data, in_channels=in_channels)['test'].image
    if max_images > 0:
        images = images[:max_images]
    cka = representation_similarity(
        model, registry, pretrained, tuned, images, batch_size=batch_size
    )
    change = weight_change(registry, pretrained['params'], tuned['params'])
    results = layout.read_results(run_dir) or {}
    trained = set(results.get('trained_units') or [n for n, c in change.items() if c > 0])
    record = {
        'run': run_dir,
        'pretrained': os.path.abspath(pretrained_dir),
        'spec': results.get('spec', config.get('finetune', {}).get('train', '')),
        'num_images': int(len(images)),
        'examples': 'pixels x images',
        'units': [
            {
                'name': u.name,
                'block': u.block,
                'group': u.group,
                'level': u.level,
                'trained': u.name in trained,
                'cka': None if math.isnan(cka[u.name]) else cka[u.name],
                'weight_change': change[u.name],
            }
            for u in registry.units
        ],
    }
    if write:
        io_utils.write_text_atomically(
            os.path.join(run_dir, RESULT_FILE), json.dumps(record, indent=2)
        )
        plot_representation_change(record, os.path.join(run_dir, FIGURE_FILE))
    return record


def plot_representation_change(record: Mapping[str, Any], path: str) -> None:
    """Two panels over the units in forward order: CKA to the pre-trained model, weight change.

    Trained units are shaded; reads only the plain dict written to representation_change.json.
    """
    import matplotlib  # Imported late: only figures need it.

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    units = record['units']
    x = np.arange(len(units))
    cka = [np.nan if u['cka'] is None else u['cka'] for u in units]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.35 * len(units)), 5), sharex=True)
    for ax in (top, bottom):
        for i, unit in enumerate(units):
            if unit['trained']:
                ax.axvspan(i - 0.5, i + 0.5, color='tab:orange', alpha=0.15, lw=0)
        ax.grid(axis='y', alpha=0.3)
    top.plot(x, cka, 'o-', color='tab:blue')
    top.set_ylabel('CKA to pre-trained')
    top.set_ylim(min(0.0, np.nanmin(cka) if np.isfinite(cka).any() else 0.0), 1.05)
    bottom.bar(x, [u['weight_change'] for u in units], color='tab:green')
    bottom.set_ylabel('||w - w_pre|| / ||w_pre||')
    bottom.set_xticks(x, [u['name'] for u in units], rotation=90, fontsize=7)
    top.set_title(
        f'{os.path.basename(record["run"])}: {record["spec"]} '
        f'(shaded: trained; {record["num_images"]} test images)',
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def study_runs(workdir: str, families: Sequence[str]) -> list[str]:
    """Folders of the finished runs of `families` in a study workdir (each run once)."""
    plan = layout.read_plan(workdir)
    runs = dict.fromkeys(p['run'] for p in plan['points'] if p['family'] in families)
    folders = [layout.run_dir(workdir, run) for run in runs]
    return [f for f in folders if layout.is_finished(f)]


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m unet_jax.representation_change',
        description=(
            'Which layers a fine-tuning changed: per unit, linear CKA between the pre-trained '
            'and the fine-tuned model on the test images, and the relative weight change. '
            f'Writes {RESULT_FILE} and {FIGURE_FILE} into each run folder.'
        ),
    )
    parser.add_argument('paths', nargs='+', help='run folders, or study workdirs (with study.json)')
    parser.add_argument(
        '--families',
        default='full',
        help="in a study workdir, the families whose runs are analysed, '+'-separated "
        '(default: full)',
    )
    parser.add_argument('--batch_size', type=int, default=8, help='images per forward pass')
    parser.add_argument('--max_images', type=int, default=0, help='0 = every test image')
    errors.add_traceback_argument(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch_size={args.batch_size} must be >= 1.')
    with errors.errors_reported('representation_change', show_traceback=args.traceback):
        for folder in run_folders(args.paths, args.families.split('+')):
            record = analyze_run(folder, batch_size=args.batch_size, max_images=args.max_images)
            ranked = sorted(
                (u for u in record['units'] if u['cka'] is not None), key=lambda u: u['cka']
            )
            most = ', '.join(f'{u["name"]} {u["cka"]:.3f}' for u in ranked[:3])
            print(
                f'{folder}: most changed (lowest CKA): {most}; wrote {RESULT_FILE}, {FIGURE_FILE}'
            )


def run_folders(paths: Sequence[str], families: Sequence[str]) -> list[str]:
    """The run folders to analyse: each path, or the finished runs of `families` in a study."""
    folders = []
    for path in paths:
        if os.path.exists(os.path.join(path, layout.PLAN_FILE)):
            found = study_runs(path, families)
            if not found:
                raise AnalyzeError(
                    f'{path}: no finished run of the families {"+".join(families)}; pass '
                    '--families with families that have finished runs, or wait for them.'
                )
            folders += found
        else:
            folders.append(path)
    return folders


if __name__ == '__main__':
    main(sys.argv[1:])
