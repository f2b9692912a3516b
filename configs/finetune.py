r"""Fine-tuning a pre-trained U-Net on a target set with some layers frozen.

  python -m unet_jax.main --config=configs/finetune.py:quick --workdir=runs/ft \
      --config.init_from=runs/pretrain --config.finetune.train='enc0..enc1'

Arguments (comma-separated): `quick` (CPU scale); `target=ultrasound|xray` (built-in simulated
sets) or `data=NAME` for a real one (busi, dataset_b, jsrt, montgomery, shenzhen, folder, ...;
with --config.data.manual_dir=...). Without init_from the run starts from scratch.
"""

from unet_jax import config_lib

TARGETS = {'ultrasound': 'synthetic_ultrasound', 'xray': 'synthetic_xray'}


def get_config(arg: str = ''):
    args = config_lib.parse_args(arg)
    config = config_lib.default_config(arg)
    target = args.get('target', 'ultrasound')
    if target not in TARGETS:
        raise ValueError(f'configs/finetune.py: target={target!r}; use one of {sorted(TARGETS)}.')
    config.data.name = args.get('data', TARGETS[target])
    config.optimizer.learning_rate = 5e-4
    config.finetune.train = '@contracting'
    return config
