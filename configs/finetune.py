r"""Fine-tuning a pre-trained U-Net on a target set with some layers frozen.

  python -m unet_jax.main --config=configs/finetune.py:quick --workdir=runs/ft \
      --config.init_from=runs/pretrain --config.finetune.train='enc0..enc1'

Arguments (comma-separated): `quick` (CPU scale); `target=NAME`, a target of the study: `us`,
`xray` (simulated; default `us`) or a real set (busi, dataset_b, jsrt, montgomery, shenzhen,
...) read from `data_root=DIR` (or --config.data.manual_dir=DIR). The target sets its data
defaults as in the study: ultrasound sets leave out normal cases (`data.drop_normal`), chest
X-ray sets train without left-right flips (`augment.flip`). The default spec, `@contracting`,
freezes the rest of the U-Net, so it needs `init_from` (a pre-training workdir): without it,
train `--config.finetune.train=@all` from scratch (or set
`--config.finetune.allow_random_frozen=True` to freeze random layers on purpose).
"""

from unet_jax.config import defaults, target_sets

WHERE = 'configs/finetune.py'
ARGUMENTS = {
    **defaults.DEFAULT_ARGUMENTS,
    'target': f'the target set, one of {", ".join(target_sets.target_names())} (default us)',
    'data_root': 'DIR holding the release folder of a real target set (its manual_dir)',
}


def get_config(arg: str = ''):
    args = defaults.parse_args(arg, ARGUMENTS, where=WHERE)
    config = defaults.default_config('quick' if args.get('quick') else '')
    name = str(args.get('target', 'us'))
    target = target_sets.builtin_target(name, data_root=str(args.get('data_root', '')), where=WHERE)
    target_sets.apply_target(config, target, where=f'{WHERE}:target={name}')
    config.optimizer.learning_rate = 5e-4
    config.finetune.train = '@contracting'
    return config
