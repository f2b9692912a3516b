"""A made-up study workdir for the report's tests: study.json plus a results.json per run.

Nothing here trains: Dice, validation curves, per-image scores, costs and times are drawn
from a small model with seed, image and run noise, so the report meets every case a real
study gives it: several targets, aliases (k = N is `full`; `pretrained` runs once for all
seeds), normal (empty-mask) test images on one target, a failed and a pending run, a scratch
baseline still improving at its last steps. Families come from unet_jax.config.families at call
time, so a family patched into that table gets points, results and predictions too.
"""

from __future__ import annotations

import json
import os

import numpy as np

from unet_jax import layout
from unet_jax.config import families

# A depth-3, base-8 U-Net at 64x64, block by block: (name, level, params, forward FLOPs).
BLOCKS = (
    ('enc0', 0, 664, 5.4e6),
    ('enc1', 1, 3488, 7.1e6),
    ('enc2', 2, 13888, 7.1e6),
    ('bottleneck', 3, 55424, 7.1e6),
    ('dec2', 2, 35936, 18.4e6),
    ('dec1', 1, 9008, 18.4e6),
    ('dec0', 0, 2264, 18.4e6),
    ('head', 0, 9, 0.07e6),
)
NAMES = tuple(b[0] for b in BLOCKS)
PARAMS = {b[0]: b[2] for b in BLOCKS}
FLOPS = {b[0]: b[3] for b in BLOCKS}
TOTAL_PARAMS = sum(PARAMS.values())
GROUPS = {
    '@all': NAMES,
    '@none': (),
    '@contracting': ('enc0', 'enc1', 'enc2'),
    '@expanding': ('dec2', 'dec1', 'dec0'),
}
ORDERS = {
    'forward': NAMES,
    'level': tuple(b[0] for b in sorted(BLOCKS, key=lambda b: (b[1], NAMES.index(b[0])))),
}
# How much tuning each block helps, per target (made up: shallow blocks matter on 'us').
IMPORTANCE = {
    'us': dict(enc0=3, enc1=2, enc2=1, bottleneck=0.5, dec2=1, dec1=1.5, dec0=2.5, head=1),
    'xray': dict(enc0=1, enc1=1, enc2=1, bottleneck=1, dec2=2, dec1=2, dec0=2, head=1),
}
LEVELS = {  # Dice of pre-trained only, full fine-tuning and scratch (lesion images)
    'us': dict(pretrained=0.25, full=0.80, scratch=0.62),
    'xray': dict(pretrained=0.10, full=0.93, scratch=0.92),
}
NUM_STEPS, SCRATCH_STEPS, EVAL_EVERY, BATCH = 120, 360, 20, 8
SYNTHETIC = {'us': 'synthetic_ultrasound', 'xray': 'synthetic_xray'}


def trained_units(family: families.Family, order: str, k: int) -> tuple[str, ...]:
    if not family.is_direction:
        if family.spec in GROUPS:
            return GROUPS[family.spec]
        return NAMES[1::2]  # a family added by a test: every other block
    ordered = ORDERS[order]
    if family.selector == 'first':
        return ordered[:k]
    if family.selector == 'last':
        return ordered[-k:]
    start = (len(ordered) - k) // 2  # a direction added by a test: from the middle out
    return ordered[start : start + k]


def make_plan(workdir, *, targets, sizes, seeds, names, orders, granularities) -> dict:
    configurations = []
    for name in names:
        family = families.get(name)
        if not family.is_direction:
            configurations.append(dict(family=name, spec=family.spec, order='', k=0))
            continue
        for order in orders:
            for k in range(1, len(NAMES) + 1):
                configurations.append(
                    dict(family=name, spec=f'{family.selector}:{k}', order=order, k=k)
                )
    points, first_of = [], {}
    for seed in seeds:
        for target in targets:
            for size in sizes:
                for c in configurations:
                    family = families.get(c['family'])
                    units = trained_units(family, c['order'] or 'forward', c['k'])
                    configuration = c['family']
                    if family.is_direction:
                        configuration += f'-{c["order"]}-{granularities[0]}-k{c["k"]}'
                    name = f'{target}/n{layout.size_name(size)}/s{seed}/{configuration}'
                    once = not family.trains  # evaluated once for every seed
                    key = (target, size, None if once else seed, family.init, frozenset(units))
                    run = first_of.setdefault(key, name)
                    points.append(
                        dict(
                            name=name,
                            run=run,
                            target=target,
                            num_train=size,
                            seed=seed,
                            family=c['family'],
                            spec=c['spec'],
                            trained_units=list(units),
                            order=c['order'],
                            granularity=granularities[0] if c['order'] else '',
                            k=c['k'],
                            dir=os.path.relpath(layout.run_dir(workdir, run), workdir),
                            pretrain_index=0,
                        )
                    )
    return dict(
        targets={t: {'data': {'name': SYNTHETIC.get(t, t)}} for t in targets},
        num_train=list(sizes),
        seeds=list(seeds),
        families=list(names),
        orders=list(orders),
        granularities=list(granularities),
        pretrain_dirs=[os.path.join(workdir, layout.PRETRAIN_DIR)],
        num_runs=len(set(first_of.values())),
        points=points,
    )


def true_dice(target: str, family: families.Family, units) -> float:
    levels = LEVELS.get(target, LEVELS['us'])
    if family.init == 'scratch':
        return levels['scratch']
    importance = IMPORTANCE.get(target, IMPORTANCE['us'])
    share = sum(importance[u] for u in units) / sum(importance.values())
    return levels['pretrained'] + (levels['full'] - levels['pretrained']) * share**0.6


def step_flops(units) -> float:
    """Forward, plus the backward from the loss down to the earliest trained block, plus
    the weight gradients of the trained blocks (the registry's model, in blocks)."""
    forward = sum(FLOPS.values())
    if not units:
        return forward
    first = min(NAMES.index(u) for u in units)
    return forward + sum(FLOPS[u] for u in NAMES[first:]) + sum(FLOPS[u] for u in units)


def draw_images(rng, lesion: np.ndarray, size: int = 48):
    """Speckled images with one bright ellipse each (a lesion), or none (a normal case)."""
    rows, cols = np.mgrid[:size, :size]
    images, masks = [], []
    for has_lesion in lesion:
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        ry, rx = rng.uniform(0.12, 0.25, 2) * size
        mask = (((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1) & has_lesion
        images.append(0.4 + 0.5 * mask + 0.25 * rng.rayleigh(1.0, (size, size)))
        masks.append(mask.astype(np.float32))
    return np.asarray(images)[..., None], np.asarray(masks)[..., None]


def predicted(rng, mask: np.ndarray, quality: float) -> np.ndarray:
    """A probability map whose outline is off by an amount that shrinks with quality."""
    shift = int(round((1 - quality) * 10))
    prob = np.roll(mask, (shift, -shift // 2), axis=(0, 1)) * (0.6 + 0.4 * quality)
    return np.clip(prob + 0.15 * rng.standard_normal(mask.shape) * (1 - quality), 0, 1)


def mask_dice(prediction: np.ndarray, mask: np.ndarray) -> float:
    total = prediction.sum() + mask.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(prediction, mask).sum() / total)


def make_results(rng, point, target_setup, seed_effect) -> dict:
    family = families.get(point['family'])
    units = point['trained_units']
    dice = true_dice(point['target'], family, units) + seed_effect + 0.01 * rng.standard_normal()
    ids, lesion, difficulty, images, masks = target_setup
    per_image = np.clip(dice + difficulty + 0.05 * rng.standard_normal(len(ids)), 0.0, 1.0)
    pred_pixels = np.where(lesion, 200, rng.poisson(30 * (1 - dice) ** 3, len(ids)))
    saved = 4
    probs = np.stack([predicted(rng, masks[i, ..., 0], per_image[i]) for i in range(saved)])
    for i in range(saved):  # the saved predictions' scores are those of the saved maps
        per_image[i] = mask_dice(probs[i] > 0.5, masks[i, ..., 0] > 0.5)
        pred_pixels[i] = int((probs[i] > 0.5).sum())
    per_image = np.where(lesion, per_image, (pred_pixels == 0).astype(float))
    scores_lesion = per_image[lesion]
    normal = ~lesion
    steps = SCRATCH_STEPS if family.init == 'scratch' else NUM_STEPS if family.trains else 0
    tau = 0.35 * steps if family.init == 'scratch' and point['target'] == 'us' else 0.08 * steps
    curve_steps = list(range(0, steps + 1, EVAL_EVERY)) if steps else []
    curve = [
        float(dice * (1 - np.exp(-s / tau)) + 0.002 * rng.standard_normal()) for s in curve_steps
    ]
    flops = step_flops(units)
    step_s = 0.02 * flops / sum(FLOPS.values())
    time = dict(compile_s=8 + rng.random(), steps_s=step_s * steps, eval_s=2.0, checkpoint_s=0.6)
    time.update(write_s=0.1)
    time['wall_s'] = sum(time.values()) + 1.5
    trained = sum(PARAMS[u] for u in units)
    return dict(
        name=point['run'],
        config=dict(num_train_steps=steps, seed=point['seed']),
        spec=point['spec'],
        trained_units=units,
        best_step=curve_steps[int(np.argmax(curve))] if curve else 0,
        num_train_examples=point['num_train'],
        val=dict(dice=max(curve) if curve else dice),
        test=dict(
            dice=float(scores_lesion.mean()),
            iou=float(np.mean(scores_lesion / (2 - scores_lesion))),
            hd95=float(np.mean(20 * (1 - scores_lesion))),
            precision=float(min(1, scores_lesion.mean() + 0.03)),
            recall=float(scores_lesion.mean() - 0.02),
            dice_pooled=float(scores_lesion.mean() + 0.01),
            num_lesion=int(lesion.sum()),
            num_normal=int(normal.sum()),
            normal_fp_rate=float(np.mean(pred_pixels[normal] > 0)) if normal.any() else None,
            loss=float(1 - scores_lesion.mean()),
        ),
        test_per_image=dict(
            ids=ids,
            dice=per_image.tolist(),
            iou=(per_image / (2 - per_image)).tolist(),
            hd95=[float(20 * (1 - d)) if ok else None for d, ok in zip(per_image, lesion)],
            lesion=lesion.tolist(),
            pred_pixels=pred_pixels.tolist(),
        ),
        val_curve=dict(step=curve_steps, dice=curve),
        params=dict(
            trained=trained,
            frozen=TOTAL_PARAMS - trained,
            total=TOTAL_PARAMS,
            trained_fraction=trained / TOTAL_PARAMS,
        ),
        cost=dict(
            num_steps=steps,
            batch_size=BATCH,
            forward_flops_per_image=sum(FLOPS.values()),
            step_flops_per_image=flops,
            train_flops=flops * BATCH * steps,
        ),
        time=time,
        step_time_s=step_s,
        wall_time_s=time['wall_s'],
        pretrain=None if family.init == 'scratch' else dict(dir='pretrain', index=0),
        group=dict(name=point['run'], size=1),
    ), dict(image=images[:saved], mask=masks[:saved], prob=probs[..., None], ids=ids[:saved])


def make_study(
    workdir: str,
    *,
    targets=('us', 'xray'),
    sizes=(16,),
    seeds=(0, 1, 2),
    names=None,
    orders=('forward', 'level'),
    granularities=('block',),
    num_test=40,
    normal_every={'us': 7},  # noqa: B006 (read only)
    failed=('xray/n16/s2/contracting',),
    pending=('us/n16/s2/deep_to_shallow-level-block-k4',),
    seed=0,
) -> dict:
    """Writes study.json and every run's results.json (but `failed` and `pending`)."""
    rng = np.random.default_rng(seed)
    plan = make_plan(
        workdir,
        targets=targets,
        sizes=sizes,
        seeds=seeds,
        names=names or [n for n in families.NAMES if families.get(n).default],
        orders=orders,
        granularities=granularities,
    )
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, layout.PLAN_FILE), 'w') as f:
        json.dump(plan, f, indent=1)
    setups = {}
    for target in targets:
        ids = [f'case{i:03d}' for i in range(num_test)]
        every = normal_every.get(target, 0)
        lesion = np.array([not every or i % every != 3 for i in range(num_test)])
        images, masks = draw_images(rng, lesion)
        setups[target] = (ids, lesion, 0.08 * rng.standard_normal(num_test), images, masks)
    seed_effects = {s: 0.015 * rng.standard_normal() for s in seeds}
    for point in plan['points']:
        if point['run'] != point['name'] or point['name'] in pending:
            continue
        directory = layout.run_dir(workdir, point['run'])
        os.makedirs(directory, exist_ok=True)
        if point['name'] in failed:
            with open(os.path.join(directory, layout.ERROR_FILE), 'w') as f:
                f.write(f'{point["name"]}\n\nRuntimeError: made-up failure\n')
            continue
        results, predictions = make_results(
            rng, point, setups[point['target']], seed_effects[point['seed']]
        )
        np.savez(os.path.join(directory, 'predictions.npz'), **predictions)
        with open(os.path.join(directory, layout.RESULTS_FILE), 'w') as f:
            json.dump(results, f)
    return plan
