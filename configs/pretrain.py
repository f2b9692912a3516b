r"""Pre-training on natural-image-like scenes with salient-object masks (all layers train).

  python -m unet_jax.main --config=configs/pretrain.py:quick --workdir=runs/pretrain

Arguments (comma-separated): `quick` (CPU scale);
`source=natural|natural_speckle|natural_imaging|ultrasound` (the natural scenes imaged as B-mode
ultrasound, the same imaging chain without speckle, or simulated breast ultrasound as the
pre-training source, as in the journal version of the study); `data=NAME`
for a real set (e.g. `data=ecssd` with --config.data.manual_dir=/path/to/ECSSD). A simulated
source is generated with its own seed (`defaults.PRETRAIN_DATA_SEED`), so it never holds the
images of a target generated with the default seed.
"""

from unet_jax.config import defaults

WHERE = 'configs/pretrain.py'
ARGUMENTS = {
    **defaults.DEFAULT_ARGUMENTS,
    'source': f'pre-training set, one of {sorted(defaults.SOURCES)} (default natural)',
    'data': 'NAME of a real set instead (e.g. ecssd, with --config.data.manual_dir=DIR)',
}


def get_config(arg: str = ''):
    args = defaults.parse_args(arg, ARGUMENTS, where=WHERE)
    config = defaults.default_config('quick' if args.get('quick') else '')
    defaults.apply_source(config, str(args.get('source', 'natural')), where=WHERE)
    if 'data' in args:
        config.data.name = str(args['data'])
    return config
