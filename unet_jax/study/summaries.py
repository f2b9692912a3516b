"""What a study writes besides its runs and its report: the representation change of its `full`
runs (for the report's panel), its Dice against k as TensorBoard curves, its answer in a
sentence (the console's last lines).
"""

import os

from absl import logging

from unet_jax import layout
from unet_jax.study.run_configs import is_chief

ANSWER_FILE = 'answer.txt'  # in the report folder, when the report writes it


def answer(workdir: str, report_path: str) -> str:
    """The report's answer in a sentence (the primary endpoint's): the report folder's
    answer.txt if the report wrote one, else made again from the runs by the report's own
    functions (what the report's first line says)."""
    path = os.path.join(os.path.dirname(report_path), ANSWER_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return ' '.join(f.read().split())
    try:
        from unet_jax.report import analysis, conclusions, stats
        from unet_jax.report.load import load

        study = load(workdir)
        margin = study.plan.get('margin') or stats.Settings().margin
        result = analysis.analyse(study, stats.Settings(margin))
        return conclusions.plain_answer(result, study.title)
    except Exception as error:  # the answer is a courtesy; the report has it
        logging.warning('study: no answer sentence (%s: %s)', type(error).__name__, error)
        return f'see the report ({type(error).__name__} while making the sentence).'


def write_study_summaries(workdir: str) -> None:
    """The study's Dice against k per target and direction family as TensorBoard scalars
    (step = k) in WORKDIR/report/ (unet_jax.report.dice_curves.write_study_curves)."""
    if not is_chief():
        return
    from unet_jax.report import dice_curves

    curves = dice_curves.write_study_curves(workdir, os.path.join(workdir, layout.REPORT_DIR))
    logging.info('study: %d curves of Dice against k in TensorBoard', len(curves))


def analyze_full_runs(workdir: str, max_images: int = 16) -> None:
    """representation_change.json (unet_jax.representation_change: CKA and weight change per
    unit) of every finished `full` run that lacks one, on its first `max_images` test images,
    for the report's panel; a run it cannot analyse is logged and left out of the panel."""
    from unet_jax import representation_change

    if not is_chief():
        return
    for folder in representation_change.study_runs(workdir, ['full']):
        if os.path.exists(os.path.join(folder, representation_change.RESULT_FILE)):
            continue
        try:
            representation_change.analyze_run(folder, max_images=max_images)
        except (representation_change.AnalyzeError, OSError, ValueError) as error:
            logging.warning('study: no representation change of %s: %s', folder, error)
