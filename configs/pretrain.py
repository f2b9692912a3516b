r"""Pre-training on natural-image-like scenes with salient-object masks (all layers train).

  python -m unet_jax.main --config=configs/pretrain.py:quick --workdir=runs/pretrain

Arguments (comma-separated): `quick` (CPU scale); `source=natural|ultrasound` (simulated
ultrasound as the pre-training source, as in the journal version of the study); `data=NAME`
for a real set (e.g. `data=ecssd` with --config.data.manual_dir=/path/to/ECSSD).
"""

from unet_jax import config_lib

SOURCES = {'natural': 'synthetic_natural', 'ultrasound': 'synthetic_ultrasound'}


def get_config(arg: str = ''):
    args = config_lib.parse_args(arg)
    config = config_lib.default_config(arg)
    source = args.get('source', 'natural')
    if source not in SOURCES:
        raise ValueError(f'configs/pretrain.py: source={source!r}; use one of {sorted(SOURCES)}.')
    config.data.name = args.get('data', SOURCES[source])
    config.finetune.train = '@all'
    return config
