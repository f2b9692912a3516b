"""The leak check: no image a target is evaluated on was seen in pre-training or training.

A study's answer is only as good as its test sets. This check hashes the preprocessed images
(what the model sees) of the pre-training set and of every target and stops the study, naming
both sides (set/split/case), when

  * a pre-training image is also a target's validation or test image (with outer
    cross-validation any target image: each is a test image in one of the folds), or
  * an image occurs in two splits of one target (train/val/test),

and warns, with the case names, about

  * a pre-training image that is also a target's training image (few-shot claims then mean
    less), an image twice in one split, and
  * near-duplicates: different files of nearly the same image (another frame of the same
    scan; BUSI has several), found by a perceptual hash.

Exact duplicates are equal preprocessed arrays; near-duplicates have close perceptual hashes
(`unet_jax.data.duplicates`: a 255-bit DCT hash, at most `NEAR_DUPLICATE_BITS` bits apart). The
split assignment keeps each target's near-duplicate clusters in one split
(`split_assignment.assign_splits`; `config.data.allow_near_duplicates` turns that off), and the
report says, per target, how many clusters and images were grouped (`LeakReport.grouping`, in its
summary and in leak_check.json).

`check_leaks` is what the study calls at its start: `check_study(config)`, then leak_check.json;
`check_study_data` checks splits already in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
import dataclasses
import json
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from unet_jax import io_utils
from unet_jax.config import families, target_sets
from unet_jax.data import duplicates, pipeline
from unet_jax.data.duplicates import HASH_BITS, NEAR_DUPLICATE_BITS
from unet_jax.layout import LEAK_CHECK_FILE
from unet_jax.study.run_configs import is_chief

PRETRAIN = 'pretrain'
EVALUATION_SPLITS = ('val', 'test')
_SHOWN = 20


class LeakError(ValueError):
    """The study's data leak; the message names the duplicates and `report` holds them all."""

    def __init__(self, message: str, report: LeakReport):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True, order=True)
class Ref:
    """One image: the set ('pretrain' or a target name), its split and its case id."""

    set: str
    split: str
    id: str

    def __str__(self) -> str:
        return f'{self.set}/{self.split}/{self.id}'


@dataclasses.dataclass(frozen=True)
class ImagePair:
    """Two images that are the same (equal preprocessed arrays) or nearly the same."""

    kind: str  # one of KINDS
    a: Ref
    b: Ref
    distance: int  # Hamming distance of their perceptual hashes (0 for exact duplicates)

    def __str__(self) -> str:
        if self.kind == 'near_duplicate':
            return f'{self.a} ~ {self.b} ({self.distance} of {HASH_BITS} hash bits differ)'
        return f'{self.a} == {self.b}'


# kind -> (is an error, what it means)
KINDS = {
    'pretrain_in_evaluation': (
        True,
        'pre-training images that are target validation/test images (with outer folds: any)',
    ),
    'across_splits': (True, 'images in two splits of one target'),
    'pretrain_in_training': (False, 'pre-training images that are target training images'),
    'within_split': (False, 'images twice in one split'),
    'near_duplicate': (False, 'near-duplicates (perceptual hash)'),
}


@dataclasses.dataclass
class LeakReport:
    """What the check compared and found; `errors` stop a study, `warnings` are logged;
    `grouping` holds each target's near-duplicate clusters (kept in one split by the split
    assignment unless the target sets data.allow_near_duplicates)."""

    num_images: dict[str, int]  # set -> images checked
    findings: list[ImagePair]
    grouping: dict[str, duplicates.Grouping] = dataclasses.field(default_factory=dict)
    # target -> clusters whose members lie in more than one split
    straddling: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def errors(self) -> list[ImagePair]:
        return [f for f in self.findings if KINDS[f.kind][0]]

    @property
    def warnings(self) -> list[ImagePair]:
        return [f for f in self.findings if not KINDS[f.kind][0]]

    def summary(self) -> str:
        sets = ', '.join(f'{name} {n}' for name, n in self.num_images.items())
        lines = [
            f'leak check over {sets} images: {len(self.errors)} errors, '
            f'{len(self.warnings)} warnings'
        ]
        for kind, (is_error, meaning) in KINDS.items():
            found = [f for f in self.findings if f.kind == kind]
            if not found:
                continue
            lines.append(f'{"ERROR" if is_error else "warning"}: {len(found)} {meaning}:')
            lines += [f'  {f}' for f in found[:_SHOWN]]
            if len(found) > _SHOWN:
                lines.append(f'  ... ({len(found)} in all)')
        if self.grouping:
            lines.append(self.grouping_summary())
        return '\n'.join(lines)

    def headline(self) -> str:
        """The summary in one line, for the console: 'leak check over pretrain 1000, busi 647
        images: 0 errors, 163 warnings (1 images twice in one split, 162 near-duplicates
        (perceptual hash)); near-duplicate clusters: ...'."""
        counts = [
            f'{n} {meaning}'
            for kind, (_, meaning) in KINDS.items()
            if (n := sum(f.kind == kind for f in self.findings))
        ]
        line = self.summary().splitlines()[0] + (f' ({", ".join(counts)})' if counts else '')
        return line + (f'; {self.grouping_summary()}' if self.grouping else '')

    def grouping_summary(self) -> str:
        """One line: the near-duplicate clusters per target, e.g. 'near-duplicate clusters:
        busi 12 clusters of 27 images (of 647), each in one split; jsrt none (of 247)'."""
        parts = []
        for name, grouping in self.grouping.items():
            if not grouping.clusters:
                parts.append(f'{name} none (of {grouping.num_cases})')
                continue
            straddling = self.straddling.get(name, 0)
            where = f'{straddling} across splits' if straddling else 'each in one split'
            parts.append(
                f'{name} {grouping.num_clusters} clusters of {grouping.num_images} images '
                f'(of {grouping.num_cases}), {where}'
            )
        return 'near-duplicate clusters: ' + '; '.join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            'num_images': dict(self.num_images),
            'near_duplicate_bits': NEAR_DUPLICATE_BITS,
            'hash_bits': HASH_BITS,
            'findings': [
                dict(kind=f.kind, error=KINDS[f.kind][0], a=str(f.a), b=str(f.b), bits=f.distance)
                for f in self.findings
            ],
            'grouping': {
                name: dict(grouping.to_dict(), straddling=self.straddling.get(name, 0))
                for name, grouping in self.grouping.items()
            },
        }


# ----------------------------------------------------------------------------- hashing


@dataclasses.dataclass
class Hashes:
    """The fingerprints of one set's images, in the order of `refs`."""

    name: str
    refs: list[Ref]
    digests: list[str]  # SHA-1 of the preprocessed image's bytes
    bits: np.ndarray  # bool [N, HASH_BITS]
    # Near-duplicates within this set: hashes at most this many bits apart (None: the check's
    # max_distance); a target's data.near_duplicate_bits, the distance its splits group by.
    near_duplicate_bits: int | None = None
    # With outer cross-validation every image is a test image in one of the folds, so a
    # pre-training copy of any of them is a leak, whatever split this fold puts it in.
    every_image_tested: bool = False


def hash_splits(
    name: str,
    splits: Mapping[str, pipeline.Split],
    near_duplicate_bits: int | None = None,
    *,
    every_image_tested: bool = False,
) -> Hashes:
    refs, digests, images = [], [], []
    for split, data in splits.items():
        for id_, image in zip(data.ids, data.image):
            refs.append(Ref(name, split, str(id_)))
            digests.append(duplicates.digest(image))
            images.append(image)
    bits = duplicates.hash_images(images)
    return Hashes(name, refs, digests, bits, near_duplicate_bits, every_image_tested)


# ----------------------------------------------------------------------------- the check
# Equal arrays have equal perceptual hashes, so one scan of the pairs within NEAR_DUPLICATE_BITS
# finds the exact duplicates too; their digests tell them from near-duplicates.


def _within_target(target: Hashes, max_distance: int) -> list[ImagePair]:
    findings = []
    for i, j, distance in duplicates.close_pairs(target.bits, target.bits, max_distance):
        if i >= j:
            continue
        a, b = target.refs[i], target.refs[j]
        if target.digests[i] != target.digests[j]:
            findings.append(ImagePair('near_duplicate', a, b, distance))
        else:
            kind = 'within_split' if a.split == b.split else 'across_splits'
            findings.append(ImagePair(kind, a, b, 0))
    return findings


def _grouping(target: Hashes, max_distance: int) -> tuple[duplicates.Grouping, int]:
    """A target's near-duplicate clusters and how many of them lie in more than one split."""
    ids = [ref.id for ref in target.refs]
    grouping = duplicates.find_clusters(ids, target.bits, max_distance=max_distance)
    split_of = {ref.id: ref.split for ref in target.refs}
    straddling = sum(len({split_of[i] for i in c}) > 1 for c in grouping.clusters)
    return grouping, straddling


def _against_pretraining(pretrain: Hashes, target: Hashes, max_distance: int) -> list[ImagePair]:
    findings = []
    for i, j, distance in duplicates.close_pairs(target.bits, pretrain.bits, max_distance):
        a, b = target.refs[i], pretrain.refs[j]
        if target.digests[i] != pretrain.digests[j]:
            findings.append(ImagePair('near_duplicate', a, b, distance))
        elif a.split in EVALUATION_SPLITS or target.every_image_tested:
            findings.append(ImagePair('pretrain_in_evaluation', a, b, 0))
        else:
            findings.append(ImagePair('pretrain_in_training', a, b, 0))
    return findings


def check_hashes(
    pretrain: Hashes | None,
    targets: Iterable[Hashes],
    *,
    max_distance: int = NEAR_DUPLICATE_BITS,
) -> LeakReport:
    """Compares every target with itself and with the pre-training set (see the module doc);
    raises LeakError when there are errors, logs the summary (INFO), returns the report."""
    targets = list(targets)
    num_images = {} if pretrain is None else {PRETRAIN: len(pretrain.refs)}
    findings = []
    grouping, straddling = {}, {}
    for target in targets:
        num_images[target.name] = len(target.refs)
        within = max_distance if target.near_duplicate_bits is None else target.near_duplicate_bits
        findings += _within_target(target, within)
        grouping[target.name], straddling[target.name] = _grouping(target, within)
        if pretrain is not None:
            findings += _against_pretraining(pretrain, target, max_distance)
    kinds = list(KINDS)
    findings.sort(key=lambda f: (kinds.index(f.kind), f.a, f.b))
    report = LeakReport(num_images, findings, grouping, straddling)
    if report.errors:
        raise LeakError(
            f'{report.summary()}\nThe study would score images that were trained on. Fix: give '
            'the pre-training set its own generation seed (config.study.pretrain.data.seed; '
            'the default is config.defaults.PRETRAIN_DATA_SEED) or other data, and remove '
            "duplicate files from the target's folder (or move them into one split).",
            report,
        )
    logging.info('%s', report.summary())  # the caller says what a person needs to see
    return report


def check_study_data(
    pretrain_splits: Mapping[str, pipeline.Split] | None,
    target_splits: Mapping[str, Mapping[str, pipeline.Split]],
    *,
    max_distance: int = NEAR_DUPLICATE_BITS,
) -> LeakReport:
    """The check on splits in memory: the pre-training set's (None: no pre-training) and
    {target name: its splits, the whole training split}."""
    pretrain = None if pretrain_splits is None else hash_splits(PRETRAIN, pretrain_splits)
    targets = [hash_splits(name, splits) for name, splits in target_splits.items()]
    return check_hashes(pretrain, targets, max_distance=max_distance)


# ----------------------------------------------------------------------------- from a config


def pretrain_data(
    config: ml_collections.ConfigDict,
) -> tuple[ml_collections.ConfigDict, int] | None:
    """(data config, in_channels) of the study's pre-training set; None when no family starts
    from pre-trained weights. A reused pre-training (study.pretrained_workdir) is described by
    the config.json it wrote."""
    study = config.study
    if all(families.get(name).init == 'scratch' for name in study.families):
        return None
    if study.get('pretrained_workdir'):
        path = os.path.join(study.pretrained_workdir, 'config.json')
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f'config.study.pretrained_workdir={study.pretrained_workdir!r} has no config.json'
                ': it is not the workdir of a pre-training run. Point it at one, or set it to '
                "'' to pre-train inside the study."
            )
        with open(path) as f:
            run = json.load(f)
        return ml_collections.ConfigDict(run['data']), int(run['model']['in_channels'])
    pretrain = study.pretrain.copy_and_resolve_references()
    return pretrain.data, int(pretrain.model.in_channels)


def target_data(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The data config of target `name` with its whole training split (num_train = -1)."""
    run = config.copy_and_resolve_references()
    target_sets.apply_target(run, config.study.targets[name], where=f'config.study.targets.{name}')
    run.data.num_train = -1
    return run.data


def check_study(
    config: ml_collections.ConfigDict, *, max_distance: int = NEAR_DUPLICATE_BITS
) -> LeakReport:
    """The leak check of a study config (configs/layerwise.py): loads the pre-training set and
    every target one at a time (only their hashes are kept) and checks them; a target's own
    near-duplicates are those within its data.near_duplicate_bits (what its splits group)."""
    source = pretrain_data(config)
    pretrain = None
    if source is not None:
        data, in_channels = source
        pretrain = hash_splits(PRETRAIN, pipeline.load_splits(data, in_channels=in_channels))
    targets = []
    for name in config.study.targets:
        data = target_data(config, name)
        splits = pipeline.load_splits(data, in_channels=config.model.in_channels)
        tested = data.get('outer_folds', 0) >= 2
        bits = pipeline.near_duplicate_bits(data)
        targets.append(hash_splits(name, splits, bits, every_image_tested=tested))
    return check_hashes(pretrain, targets, max_distance=max_distance)


def check_leaks(
    config: ml_collections.ConfigDict,
    workdir: str,
    check_fn: Callable[[ml_collections.ConfigDict], Any] | None = None,
) -> None:
    """Runs the leak check and writes leak_check.json (what was compared, what was found);
    a leak raises LeakError before any run starts."""
    try:
        report = (check_fn or check_study)(config)
    except LeakError as error:
        _write_leak_check(workdir, error.report)
        raise
    if report is None:
        return
    _write_leak_check(workdir, report)
    if report.warnings:  # the console gets one line; the log and leak_check.json list them
        where = os.path.join(workdir, LEAK_CHECK_FILE)
        logging.warning('study: %s; listed in %s', report.headline(), where)


def _write_leak_check(workdir: str, report: Any) -> None:
    if is_chief():
        io_utils.write_text_atomically(
            os.path.join(workdir, LEAK_CHECK_FILE), json.dumps(report.to_dict(), indent=1)
        )
