"""What the report's figures share (PNG, matplotlib Agg): the `Figure` record, colours and
styles, the grid of panels (one per target and training size) and saving with one legend.

Colours come from the family's place in unet_jax.config.families, line styles from the depth order's
place in the plan, markers from the granularity's, so a new family, direction or order is
drawn without a change here. A panel with fewer than two points is not drawn (the caption
says so); a configuration with one value per panel (a reference) is a line or a marker.
The figures: dice_figures (test Dice against k, cost and size; the references),
training_figures (validation curves, which layers changed), endpoint_figure (the primary
endpoint's forest plot), qualitative (the outlined predictions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402

from unet_jax import layout
from unet_jax.config import families
from unet_jax.report.load import Study  # noqa: E402

LINE_STYLES = ('-', '--', ':', '-.')
MARKERS = ('o', 's', '^', 'D', 'v', 'P')
REFERENCE_MARKERS = ('X', '*', 'P', 'h', 'p', 'd', '8', 's', 'v', '^')
GT_COLOR, PREDICTION_COLOR = '#00d000', '#ff3030'
# One colour per family of config/families.py (directions, references: table order), none shared.
DIRECTION_COLORS = (
    'tab:blue', 'tab:red', 'tab:cyan', 'tab:olive', 'tab:pink', 'sienna', 'slateblue',
    'darkorange', 'teal', 'navy',
)  # fmt: skip
AUTO_COLORS = {'rgn': 'tab:red', 'probe': 'tab:cyan'}
REFERENCE_COLORS = (
    '0.55', 'k', 'tab:green', 'tab:purple', 'tab:orange', 'tab:brown', 'gold', 'magenta',
    'darkcyan', 'yellowgreen',
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Figure:
    file: str
    caption: str
    labels: tuple[str, ...] = ()  # what it draws (its legend): the page's alt text


def family_color(name: str) -> str:
    """Directions in saturated colours, references in their own palette, by table position;
    a family past the end of its palette (one added to the table) gets a hue of its own."""
    for names, palette, offset in (
        (families.DIRECTIONS, DIRECTION_COLORS, 0.0),
        (families.REFERENCES, REFERENCE_COLORS, 0.5),
    ):
        if name in names:
            i = names.index(name)
            if i < len(palette):
                return palette[i]
            hue = (offset + 0.618034 * (i - len(palette))) % 1.0  # golden-ratio steps
            return matplotlib.colors.to_hex(matplotlib.colors.hsv_to_rgb((hue, 0.8, 0.75)))
    return '0.4'


def size_label(num_train: int) -> str:
    return f'n = {layout.size_name(num_train)}'


def _grid(study: Study) -> tuple[int, int]:
    """Rows x columns of panels: targets by sizes, or the targets in a row for one size."""
    if len(study.sizes) > 1:
        return len(study.targets), len(study.sizes)
    cols = min(len(study.cells), 3)
    return math.ceil(len(study.cells) / cols), cols


def _panels(
    study: Study, draw: Callable, path: str, *, width=4.4, height=3.3
) -> tuple[list[str], tuple[str, ...]]:
    """Calls draw(ax, target, num_train) -> number of points, for each cell; hides panels with
    fewer than two; saves if any is left. Returns the hidden panels' titles and the legend."""
    rows, cols = _grid(study)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    hidden = []
    for ax in axes.ravel()[len(study.cells) :]:
        ax.set_visible(False)
    for (target, num_train), ax in zip(study.cells, axes.ravel()):
        ax.set_title(f'{study.title(target)}, {size_label(num_train)}', fontsize=10)
        if draw(ax, target, num_train) < 2:
            ax.set_visible(False)
            hidden.append(f'{target}, {size_label(num_train)}')
        ax.grid(alpha=0.3)
    labels = save(fig, axes, path) if len(hidden) < len(study.cells) else ()
    plt.close(fig)
    return hidden, labels


def write_png(fig, path: str) -> None:
    """A one-panel figure (its legend, if any, drawn by the caller) laid out, saved and closed."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)


def save(fig, axes, path: str) -> tuple[str, ...]:
    """One legend for all panels, right of them (any number of panels or lines fits)."""
    fig.tight_layout()
    seen = {}
    for ax in np.ravel(axes):
        if ax.get_visible():
            for handle, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc='center left', bbox_to_anchor=(1.0, 0.5),
            fontsize=8,
        )  # fmt: skip
    fig.savefig(path, dpi=110, bbox_inches='tight')
    return tuple(seen)


def panel_figure(
    study: Study, draw: Callable, path: str, caption: str, **size: float
) -> Figure | None:
    """The figure of `_panels`, its caption naming the panels not drawn; None if none is."""
    hidden, labels = _panels(study, draw, path, **size)
    if len(hidden) == len(study.cells):
        return None
    return Figure(os.path.basename(path), caption + _hidden_note(hidden), labels)


def _hidden_note(hidden: Sequence[str]) -> str:
    if not hidden:
        return ''
    return f' Not drawn (fewer than two points): {"; ".join(hidden)}.'
