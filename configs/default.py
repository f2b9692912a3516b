r"""Defaults of one training run; the other configs start from here.

A freeze configuration is `finetune.train`, a spec of the layers that train (everything else is
frozen): e.g. '@all', '@contracting', 'enc0..enc2', 'first:3', 'last:2,-head' (see README,
"Freeze specs"). `first:`/`last:` count in `finetune.order` ('forward': position on the data path;
'level': resolution level, enc0/dec0/head shallowest, bottleneck deepest) at
`finetune.granularity` ('block' or 'unit').

The one argument, `quick`, shrinks the run to CPU scale (big_vision style):
  python -m unet_jax.main --config=configs/default.py:quick --workdir=runs/x
"""

from unet_jax.config import defaults


def get_config(arg: str = ''):
    return defaults.default_config(arg)
