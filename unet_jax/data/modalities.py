"""The imaging modality of each data set (standard library only: configs and the report use it).

Chest radiographs: a left-right flip moves the heart to the other side, an image that never
occurs, so these sets train without flips. Ultrasound sets: normal cases (no lesion, empty
mask) are left out, as segmentation papers on BUSI do; the lesion Dice is then not mixed with
detection on empty images. The report's primary endpoint compares the shallow-vs-deep gap on
the ultrasound targets with the X-ray target's.
"""

from __future__ import annotations

ULTRASOUND, XRAY = 'ultrasound', 'xray'
XRAY_SETS = ('synthetic_xray', 'jsrt', 'montgomery', 'shenzhen')
ULTRASOUND_SETS = ('synthetic_ultrasound', 'busi', 'dataset_b')


def modality(data_name: str) -> str:
    """'ultrasound', 'xray' or '' (another set, e.g. a folder set)."""
    if data_name in ULTRASOUND_SETS:
        return ULTRASOUND
    if data_name in XRAY_SETS:
        return XRAY
    return ''
