"""The imaging modality of each data set, as the catalogue declares it (standard library only:
configs and the report use it). Why ultrasound and X-ray targets differ by default: the
docstring of unet_jax.data.catalogue. The report's primary endpoint compares the
shallow-vs-deep gap on the ultrasound targets with the X-ray target's.
"""

from __future__ import annotations

from unet_jax.data import catalogue

ULTRASOUND, XRAY = catalogue.ULTRASOUND, catalogue.XRAY
XRAY_SETS = catalogue.names(modality=XRAY)
ULTRASOUND_SETS = catalogue.names(modality=ULTRASOUND)


def modality(data_name: str) -> str:
    """'ultrasound', 'xray' or '' (another set, e.g. a natural or a folder set)."""
    if data_name in ULTRASOUND_SETS:
        return ULTRASOUND
    if data_name in XRAY_SETS:
        return XRAY
    return ''
