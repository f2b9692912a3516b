"""The report: statistics with known answers, tables and conclusions, a self-contained html."""

import base64
import csv
import io
import math
import re

from PIL import Image
import pytest

from tests.test_study import FakeTrainer, fake_dice, tiny_study_config
from unet_jax import report, study

T_975_DF2 = 4.302652729749464  # two-sided 95% critical value of Student's t, 2 d.o.f.


def test_summary_mean_std_and_t_interval():
    s = report.summarize([0.7, 0.8, 0.9])
    assert s.n == 3
    assert s.mean == pytest.approx(0.8)
    assert s.std == pytest.approx(0.1)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.8 - half), pytest.approx(0.8 + half))
    one = report.summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)


def test_paired_t_test_effect_size_and_p():
    # Differences 1, 2, 3: mean 2, sd 1, t = 2 * sqrt(3) with 2 d.o.f., whose two-sided p has
    # the closed form 1 - t / sqrt(t^2 + 2).
    c = report.paired_comparison([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    t = 2 * math.sqrt(3)
    assert (c.n, c.mean_diff, c.sd_diff, c.d_z) == (3, 2.0, 1.0, 2.0)
    assert c.t == pytest.approx(t)
    assert c.p == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert math.isnan(c.p_wilcoxon)  # fewer than 6 pairs
    single = report.paired_comparison([0.9], [0.5])
    assert single.mean_diff == pytest.approx(0.4) and math.isnan(single.p)


def test_holm_adjustment():
    assert report.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx(
        [0.03, 0.06, 0.06, math.nan], nan_ok=True
    )


def test_conclusions_claim_only_what_the_seeds_support():
    # Contracting beats expanding by 0.2 + 0.01 * seed: a large, consistent difference.
    d = report.paired_comparison([0.80, 0.81, 0.82, 0.84], [0.60, 0.60, 0.61, 0.62])
    text = report._describe('contracting', 'expanding', d)
    assert text.startswith('contracting beat expanding') and 'd_z' in text
    noisy = report.paired_comparison([0.8, 0.6, 0.7], [0.7, 0.7, 0.7])
    assert 'no evidence of a difference' in report._describe('a', 'b', noisy)
    assert 'no test is possible' in report._describe(
        'a', 'b', report.paired_comparison([0.8], [0.7])
    )


def _study_with_fake_results(tmp_path, seeds):
    config = tiny_study_config(seeds=seeds, orders='forward+level')
    study.main(config, str(tmp_path), run_fn=FakeTrainer())
    return config


def test_report_tables_match_the_results(tmp_path):
    config = _study_with_fake_results(tmp_path, seeds=3)
    with open(tmp_path / 'report/summary.csv') as f:
        summary = {(r['target'], r['configuration']): r for r in csv.DictReader(f)}
    contracting = summary[('us', 'contracting')]
    assert contracting['seeds_done'] == '3'
    expected = [fake_dice(_config_of(config, tmp_path, 'contracting', s)) for s in range(3)]
    assert float(contracting['dice_mean']) == pytest.approx(sum(expected) / 3)
    assert float(contracting['dice_std']) == pytest.approx(0.01)
    # An alias reports its run's numbers and says so.
    alias = summary[('us', 'shallow_to_deep-forward-block-k2')]
    assert alias['same_run_as'] == 'contracting' and alias['dice_mean'] == contracting['dice_mean']
    findings = (tmp_path / 'report/conclusions.md').read_text()
    assert 'tuning the contracting path beat tuning the expanding path' in findings
    assert 'fine-tuning everything from pre-training beat training from scratch' in findings


def _config_of(config, workdir, configuration, seed):
    point = next(
        p
        for p in study.enumerate_sweep(config).points
        if p.name == f'us/n16/s{seed}/{configuration}'
    )
    return study.point_config(config, point, str(workdir))


def test_html_is_self_contained_with_every_image_a_png(tmp_path):
    _study_with_fake_results(tmp_path, seeds=1)
    page = (tmp_path / 'report/report.html').read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == len(re.findall(r'<img', page)) == 4  # 3 plots + qualitative
    for src in sources:
        assert src.startswith('data:image/png;base64,')
        image = Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1])))
        assert image.format == 'PNG' and min(image.size) > 100
    assert 'only one seed, so no test is possible' in page
    assert 'href=' not in page and 'src="http' not in page


def test_report_without_a_study_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match='not a study workdir'):
        report.write_report(str(tmp_path))
