"""The report end to end, on made-up study workdirs (tests/report_fixture.py)."""

import base64
import csv
import html
import io
import json
import os
import re
import subprocess
import sys
from unittest import mock

import pandas as pd
from PIL import Image
import pytest

from tests import report_fixture
from unet_jax import layout
from unet_jax.config import families
from unet_jax.report import write_report

ENV = dict(os.environ, PYTHONPATH=os.getcwd())


@pytest.fixture(scope='module')
def study(tmp_path_factory):
    """Two targets ('us' with normal images), 3 seeds, both depth orders, one failed run and
    one pending run; the report written once."""
    workdir = str(tmp_path_factory.mktemp('study'))
    plan = report_fixture.make_study(workdir, num_test=24)
    write_report(workdir)
    return workdir, plan


def read(workdir, name):
    with open(os.path.join(workdir, layout.REPORT_DIR, name)) as f:
        return f.read()


def read_csv(workdir, name):
    with open(os.path.join(workdir, layout.REPORT_DIR, name)) as f:
        return list(csv.DictReader(f))


def small_study(tmp_path) -> str:
    """One target, 2 seeds, the forward order, every run finished; the report written."""
    workdir = str(tmp_path)
    report_fixture.make_study(
        workdir, targets=('us',), seeds=(0, 1), orders=('forward',), num_test=12, failed=(),
        pending=(),
    )  # fmt: skip
    write_report(workdir)
    return workdir


def results_of(workdir, plan, name):
    point = next(p for p in plan['points'] if p['name'] == name)
    return layout.read_results(os.path.join(workdir, point['dir']))


def test_every_output_and_a_self_contained_page(study):
    workdir, _ = study
    for name in ('report.html', 'summary.md', 'conclusions.md', 'results.csv', 'images.csv'):
        assert os.path.getsize(os.path.join(workdir, layout.REPORT_DIR, name)) > 0
    page = read(workdir, 'report.html')
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    pngs = [f for f in os.listdir(os.path.join(workdir, layout.REPORT_DIR)) if f.endswith('.png')]
    assert len(sources) == len(pngs) >= 7  # units, params, flops, references, curves, 2 qual.
    for src in sources:
        assert src.startswith('data:image/png;base64,')
        image = Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1])))
        assert image.format == 'PNG' and min(image.size) > 100
    assert 'href=' not in page and 'src="http' not in page
    assert 'One training size: no figure of Dice against the training-set size.' in page


def test_the_page_opens_with_the_primary_endpoint(study):
    workdir, _ = study
    page = html.unescape(read(workdir, 'report.html'))
    first_screen = page.split('<h1>')[1].split('<h2>')[0]
    answer = re.search(r'<p class="primary">(.*?)</p>', first_screen).group(1)
    # in plain words: which is better, by how much, how sure; no p, df or nested parentheses
    assert re.match(
        r'On simulated breast ultrasound \(us\) with 16 training images, '
        r'(shallow->deep beats deep->shallow|'
        r'deep->shallow beats shallow->deep|the data cannot tell)',
        answer,
    )
    assert 'averaged over k = 1, 2, 3, 4, 5, 6, 7' in answer and '95% CI' in answer
    us, xray = 'simulated breast ultrasound (us)', 'simulated chest X-ray (xray)'
    assert any(f' on {one} than on {other} ' in answer for one, other in ((us, xray), (xray, us))) \
        or f'between {us} and {xray}' in answer  # fmt: skip
    assert 'p =' not in answer and 'df' not in answer
    # a stated advantage comes with the CI of that advantage (positive), whichever side won
    stated = re.findall(r'(?:beats|larger)[^(]*\(95% CI ([+-][\d.]+) to ([+-][\d.]+)\)', answer)
    assert stated and all(float(low) > 0 and float(high) > 0 for low, high in stated)
    # the statistics folded beneath it
    folded = re.search(r'<details class="stats"><summary>(.*?)</summary>(.*?)</details>',
                       first_screen).group(2)  # fmt: skip
    sentence = re.search(r'<p>(Primary endpoint \(.*?)</p>', folded).group(1)
    assert sentence.startswith('Primary endpoint (the gap shallow->deep minus deep->shallow')
    assert 'on us at n = 16' in sentence and 'minus the gap on xray' in sentence
    assert re.search(r'the gap on us is (positive|negative|shows no evidence)[^;]*95% CI', sentence)
    assert 'No registration record' in folded and 'What the primary test on us rests on' in folded
    assert read(workdir, 'answer.txt').strip() == answer
    assert 'primary_endpoint.png' in first_screen  # its figure, before anything else
    headings = re.findall(r'<h2>(.*?)</h2>', page)
    assert headings[:2] == ['Problems', 'The answer']
    answer = page.split('<h2>The answer</h2>')[1].split('<h2>')[0]
    for cell in (
        'simulated breast ultrasound (us), n = 16',
        'simulated chest X-ray (xray), n = 16',
    ):
        assert cell in answer
    assert answer.index('Primary endpoint') < answer.index('Which configuration wins')
    assert (
        'best on validation' in answer and 'cheapest within 1 point of full on validation' in answer
    )
    assert 'Which direction wins over a common cost range' in answer
    conclusions = page.split('<h2>Conclusions</h2>')[1].split('<h2>')[0]
    assert conclusions.index('Primary endpoint') < conclusions.index('(secondary)')
    assert conclusions.count('<details><summary>evidence</summary>') >= 10


def test_every_choice_is_made_on_validation(tmp_path):
    workdir = str(tmp_path)
    plan = report_fixture.make_study(
        workdir, targets=('us',), seeds=(0, 1, 2), orders=('forward',), num_test=12,
        failed=(), pending=(),
    )  # fmt: skip
    # contracting: the best validation Dice of all, a poor test Dice
    for point in plan['points']:
        if point['family'] == 'contracting':
            path = os.path.join(workdir, point['dir'], layout.RESULTS_FILE)
            with open(path) as f:
                results = json.load(f)
            results['val']['dice'] = 0.99
            with open(path, 'w') as f:
                json.dump(results, f)
    write_report(workdir)
    summary = {r['configuration']: r for r in read_csv(workdir, 'summary.csv')}
    assert float(summary['contracting']['dice_mean']) < float(summary['full']['dice_mean'])
    text = read(workdir, 'summary.md')
    row = next(
        line
        for line in text.splitlines()
        if line.startswith('| simulated breast ultrasound (us), n = 16 | contracting path')
    )
    assert '| no (' in row  # the validation pick is not the test pick, and it says so
    assert 'also the highest test mean in 0 of 1 cells' in text
    # contracting is within 1 point of full on validation and cheaper: the cheapest pick
    assert re.search(r'\| contracting path \(val 0\.990; test vs full [-+]', row)


def test_summary_matches_the_runs(study):
    workdir, plan = study
    summary = {(r['target'], r['configuration']): r for r in read_csv(workdir, 'summary.csv')}
    full = summary[('us', 'full')]
    dice = [results_of(workdir, plan, f'us/n16/s{s}/full')['test']['dice'] for s in range(3)]
    assert float(full['dice_mean']) == pytest.approx(sum(dice) / 3)
    assert float(full['dice_ci_low']) < float(full['dice_mean']) < float(full['dice_ci_high'])
    alias = summary[('us', 'shallow_to_deep-forward-block-k8')]  # trains everything: = full
    assert alias['same_run_as'] == 'full' and alias['dice_mean'] == full['dice_mean']
    pretrained = summary[('us', 'pretrained')]  # one run for every seed: no spread, no CI
    assert pretrained['runs_done'] == '1' and pretrained['seeds_done'] == '3'
    assert pretrained['dice_std'] == pretrained['dice_ci_low'] == ''
    assert '| pre-trained only | 1 run (all 3 seeds) |' in read(workdir, 'summary.md')
    assert summary[('xray', 'contracting')]['seeds_failed'] == '1'


def test_lesion_dice_is_the_headline_and_normal_cases_are_apart(study):
    workdir, plan = study
    results = results_of(workdir, plan, 'us/n16/s0/full')
    scores = results['test_per_image']
    lesion = [d for d, is_lesion in zip(scores['dice'], scores['lesion']) if is_lesion]
    assert results['test']['num_normal'] > 0 and len(lesion) < len(scores['dice'])
    rows = [
        r
        for r in read_csv(workdir, 'images.csv')
        if r['name'] == 'us/n16/s0/full' and r['lesion'] == 'True'
    ]
    assert sorted(float(r['dice']) for r in rows) == pytest.approx(sorted(lesion))
    comparisons = read_csv(workdir, 'comparisons.csv')
    paths = next(c for c in comparisons if c['target'] == 'us' and c['kind'] == 'paths')
    assert paths['num_images'] == str(len(lesion))  # tested over lesion images only
    summary = read(workdir, 'summary.md')
    us_table = summary.split('**Test Dice: simulated breast ultrasound (us), n = 16**')[1].split(
        '**'
    )[0]
    xray_table = summary.split('**Test Dice: simulated chest X-ray (xray), n = 16**')[1].split(
        '**'
    )[0]
    assert 'normal FP' in us_table and 'normal FP' not in xray_table
    assert 'normal test images (empty ground truth) are scored apart' in summary


def test_conclusions_state_their_evidence_and_claim_no_more(study):
    workdir, _ = study
    text = read(workdir, 'conclusions.md')
    assert 'as good as' not in text.lower()
    assert 'over seeds t(' not in text and 'paired t over seeds' not in text  # never evidence
    lines = text.splitlines()
    claims = [i for i, line in enumerate(lines) if line.startswith('- ')]
    comparisons = [i for i in claims if 'beats' in lines[i] or 'evidence' in lines[i]]
    assert len(comparisons) >= 10
    for i in comparisons:
        claim, evidence = lines[i], lines[i + 1]
        assert evidence.startswith('  - *Evidence:* '), claim
        if 'at each k' in claim:
            assert 'Holm-adjusted' in evidence
        elif 'differs between' in claim or 'larger on' in claim:  # an interaction
            assert 'two test sets' in evidence and 'difference of the two gaps' in evidence
        else:
            assert re.search(
                r'n = \d seeds? x \d+ lesion test images, 1 pre-training run', evidence
            ), evidence
            assert "the design's t-test" in evidence and 'detectable at 80% power' in evidence
            assert 'components, SD: seed' in evidence and 'residual' in evidence
        if 'no evidence of a difference' in claim:
            assert 'detectable: ' in claim  # what could have been found, on the line itself
    for i in claims:
        if 'are equivalent within' in lines[i]:
            assert 'TOST' in lines[i]
    scratch = next(
        i for i in claims if 'full fine-tuning' in lines[i].lower() and 'from scratch' in lines[i]
    )
    assert (
        'Caution, still improving when training stopped: scratch (3 of 3 runs)'
        in lines[scratch + 1]
    )
    assert 'averaged over the common range [' in text
    assert text.count('Holm-adjusted') >= 10
    assert '(primary endpoint, fixed sequence at 0.05: ' in text
    assert 'Between targets (secondary interactions)' in text


def test_flags_time_breakdown_and_failures_in_the_tables(study):
    workdir, _ = study
    summary = read(workdir, 'summary.md')
    assert '| from scratch | 3/3 |' in summary
    assert re.search(r'\| from scratch \| 3/3 \|[^\n]*\| yes, 3 of 3 \|', summary)
    assert '**Cost and time: simulated breast ultrasound (us), n = 16**' in summary
    header = '| configuration | trained params | steps (plateau/cap) | training FLOPs | step ms |'
    assert header in summary
    assert 'xray/n16/s2/contracting: failed' in summary
    assert '174 of 176 runs finished, 1 failed, 1 pending' in summary


def test_markdown_and_html_hold_the_same_tables(study):
    workdir, _ = study
    markdown, page = read(workdir, 'summary.md'), html.unescape(read(workdir, 'report.html'))
    md_titles = re.findall(r'^\*\*(.+?)\*\*$', markdown, re.M)
    html_titles = re.findall(r'<caption>(.*?)</caption>', page)
    # primary, answer, budget; per cell: Dice, comparisons, time; comparisons between targets
    assert md_titles == html_titles and len(md_titles) == 3 + 3 * 2 + 1
    md_rows = [r for r in markdown.splitlines() if r.startswith('| ') and '---' not in r]
    assert len(md_rows) == page.count('<tr>')


def test_a_new_family_and_direction_appear_everywhere(tmp_path, monkeypatch):
    new = (
        families.Family('decoder_head', 'decoder + head', init='pretrained', spec='@dec+head'),
        families.Family('middle_out', 'middle-out', init='pretrained', selector='middle'),
    )
    table = families.FAMILIES + new
    monkeypatch.setattr(families, 'FAMILIES', table)
    monkeypatch.setattr(families, 'BY_NAME', {f.name: f for f in table})
    monkeypatch.setattr(families, 'NAMES', tuple(f.name for f in table))
    monkeypatch.setattr(families, 'REFERENCES', tuple(f.name for f in table if not f.is_direction))
    monkeypatch.setattr(families, 'DIRECTIONS', tuple(f.name for f in table if f.is_direction))
    workdir = small_study(tmp_path)
    summary = {r['configuration'] for r in read_csv(workdir, 'summary.csv')}
    assert {'decoder_head', 'middle_out-forward-block-k2'} <= summary
    markdown = read(workdir, 'summary.md')
    assert '| decoder + head |' in markdown and '| 2 blocks (middle-out) |' in markdown
    assert 'shallow->deep - middle-out' in markdown and 'deep->shallow - middle-out' in markdown
    page = html.unescape(read(workdir, 'report.html'))
    alts = dict(re.findall(r'<img alt="([^:"]+): ([^"]*)"', page))
    for figure in ('dice_vs_units.png', 'dice_vs_params.png', 'dice_vs_flops.png'):
        assert 'middle-out (forward, by block)' in alts[figure]
        assert 'decoder + head (reference)' in alts[figure]
    for figure in ('references.png', 'val_curves.png'):
        assert 'decoder + head' in alts[figure]
    # the qualitative figure is about the question (shallow- vs deep-k), not every reference
    assert 'decoder_head' not in alts['qualitative_us.png']


def test_the_qualitative_figure_sets_shallow_k_against_deep_k_beside_full(study):
    """The question itself: shallow->deep k and deep->shallow k at one k (the
    recommendation's when it is a direction point), beside full and the pre-trained model."""
    workdir, _ = study
    page = html.unescape(read(workdir, 'report.html'))
    alts = dict(re.findall(r'<img alt="([^:"]+): ([^"]*)"', page))
    for target in ('us', 'xray'):
        columns = alts[f'qualitative_{target}.png'].split(', ')
        assert columns[0] == 'full' and columns[3] == 'pretrained'
        shallow, deep = columns[1:3]
        assert shallow.startswith('shallow_to_deep-') and deep.startswith('deep_to_shallow-')
        assert shallow.rsplit('-k', 1)[1] == deep.rsplit('-k', 1)[1]  # the same k


def test_one_seed_two_sizes_and_panels_of_one_point(tmp_path):
    workdir = str(tmp_path)
    plan = report_fixture.make_study(
        workdir, targets=('us',), sizes=(8, 16), seeds=(0,), orders=('forward',),
        names=('pretrained', 'scratch', 'full', 'shallow_to_deep'), num_test=12,
        failed=(), pending=(),
    )  # fmt: skip
    for point in plan['points']:  # n = 8: full and every k > 1 are pending
        pending = point['family'] == 'full' or point['k'] > 1
        if point['num_train'] == 8 and pending and point['run'] == point['name']:
            os.remove(os.path.join(workdir, point['dir'], layout.RESULTS_FILE))
    write_report(workdir)
    text = read(workdir, 'summary.md')
    assert re.search(r'n = 1 seed x \d+ lesion test images.*paired t-test over test images', text)
    assert 'dice_vs_size.png' in text
    assert 'Not drawn (fewer than two points): us, n = 8.' in text
    summary = read_csv(workdir, 'summary.csv')
    assert all(r['dice_ci_low'] == '' for r in summary)  # every row is a single run


def test_results_without_the_optional_keys(tmp_path):
    workdir = str(tmp_path)
    plan = report_fixture.make_study(
        workdir, targets=('us',), seeds=(0, 1), orders=('forward',), num_test=12, failed=(),
        pending=(),
    )  # fmt: skip
    for directory in {p['dir'] for p in plan['points']}:
        path = os.path.join(workdir, directory, layout.RESULTS_FILE)
        with open(path) as f:
            results = json.load(f)
        for key in ('val_curve', 'cost', 'time', 'pretrain', 'group', 'test_per_image'):
            del results[key]
        with open(path, 'w') as f:
            json.dump(results, f)
    write_report(workdir)
    text = read(workdir, 'summary.md')
    assert 'per-seed means (no per-image scores)' in text
    assert '| full fine-tuning | 2/2 |' in text


def run_cli(*args):
    return subprocess.run(
        [sys.executable, '-m', 'unet_jax.report', *args],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip


def test_cli_help_and_bad_workdirs(tmp_path):
    help_ = run_cli('--help')
    assert help_.returncode == 0 and 'usage: python -m unet_jax.report' in help_.stdout
    missing = run_cli(str(tmp_path / 'nowhere'))
    assert missing.returncode != 0 and 'is not a folder' in missing.stderr
    empty = run_cli(str(tmp_path))
    assert empty.returncode != 0 and 'not a study workdir' in empty.stderr
    (tmp_path / layout.PLAN_FILE).write_text('{"targets": ')
    broken = run_cli(str(tmp_path))
    assert broken.returncode != 0 and 'study.json cannot be read' in broken.stderr
    for result in (missing, empty, broken):
        assert 'Traceback' not in result.stderr and result.stderr.count('error: ') == 1


def test_the_report_imports_no_jax(study):
    workdir, _ = study
    code = (
        'import sys\n'
        'from unet_jax.report.__main__ import main\n'
        f'assert main([{workdir!r}]) == 0\n'
        'print(sorted(m for m in ("jax", "flax", "tensorflow") if m in sys.modules))\n'
    )
    result = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith('[]')


def test_full_is_compared_with_the_statistics_matched_control(tmp_path):
    workdir = str(tmp_path)
    report_fixture.make_study(
        workdir, targets=('us',), seeds=(0, 1), orders=('forward',), num_test=12,
        names=('pretrained', 'scratch', 'full', 'matched'), failed=(), pending=(),
    )  # fmt: skip
    write_report(workdir)
    pairs = {(r['kind'], r['a'], r['b']) for r in read_csv(workdir, 'comparisons.csv')}
    assert {('pretraining', 'full', 'scratch'), ('pretraining', 'full', 'matched')} <= pairs
    assert '| matched |' in read(workdir, 'summary.md')


def test_a_new_comparison_kind_is_one_registry_entry(tmp_path, monkeypatch):
    """A made-up kind (fine-tuning vs the pre-trained model as it is), registered in
    kinds.KINDS and nowhere else, is compared, tabled and concluded in its own words."""
    from unet_jax.report import contrasts, kinds

    def gain_contrasts(cell):
        sides = (contrasts.FULL, 'pretrained')
        made = set(sides) <= cell.families
        return [contrasts.Contrast('gain', *sides, *sides, sides, {})] if made else []

    gain = kinds.ComparisonKind(
        'gain', cell_contrasts=gain_contrasts, scope=lambda c: 'as pre-trained',
        named=lambda name: f'the made-up {kinds.label(name)}',
        verdict_words=lambda c: ('fine-tuning pays', 'fine-tuning hurts'),
        title=lambda c: f'gain of {c.a} over {c.b}',
    )  # fmt: skip
    monkeypatch.setitem(kinds.KINDS, 'gain', gain)
    workdir = small_study(tmp_path)
    rows = [r for r in read_csv(workdir, 'comparisons.csv') if r['kind'] == 'gain']
    assert [(r['a'], r['b'], r['scope'], r['verdict']) for r in rows] == [
        ('full', 'pretrained', 'as pre-trained', 'a')
    ]
    summary = read(workdir, 'summary.md')
    assert '| gain of full over pretrained | as pre-trained | secondary |' in summary
    row = next(line for line in summary.splitlines() if '| gain of full over' in line)
    assert row.endswith('| fine-tuning pays |')
    claim = 'As pre-trained: the made-up full fine-tuning beats the made-up pre-trained only by'
    assert claim in read(workdir, 'conclusions.md')


def test_the_first_screen_says_what_to_tune_with_the_curve_over_k(study):
    """Before the tables: the primary sentence, what to tune per cell in plain words (chosen
    on validation), the primary test's variance components, then Dice against k."""
    workdir, _ = study
    text = read(workdir, 'summary.md')
    head = text[: text.index('## The answer')]
    assert head.index('Primary endpoint') < head.index('What to tune, chosen on validation:')
    assert 'variance components (SD of the per-image gap)' in head
    bullets = [line for line in head.splitlines() if re.match(r'- simulated ', line)]
    # each target by its title, the size in words
    assert [b.split(':')[0] for b in bullets] == [
        '- simulated breast ultrasound (us), 16 images',
        '- simulated chest X-ray (xray), 16 images',
    ]
    assert all(re.match(r'- [^:]+: (tune|use) ', b) for b in bullets)
    assert not any('_to_' in b for b in bullets)  # readable names, not internal ones
    assert (
        head.index('What to tune')
        < head.index('dice_vs_units.png')
        < head.index('primary_endpoint.png')
    )
    assert text.count('(dice_vs_units.png)') == 1  # not again among the figures


def test_configurations_read_as_a_person_says_them(study):
    from unet_jax.report import conclusions
    from unet_jax.report.load import load

    loaded = load(study[0])
    names = set(loaded.runs['configuration'])
    first = next(n for n in names if n.startswith('shallow_to_deep-forward-block-k2'))
    assert conclusions.readable(loaded.runs, first) == 'the first 2 blocks (shallow->deep)'
    last = next(n for n in names if n.startswith('deep_to_shallow-level-block-k1'))
    expected = 'the last 1 block (deep->shallow, level order)'
    assert conclusions.readable(loaded.runs, last) == expected
    assert conclusions.readable(loaded.runs, 'full') == 'full fine-tuning'
    # tables: no article, the summary's rows serve as well as the runs'; any direction family
    # reads by its label
    assert conclusions.named(loaded.runs, first) == 'first 2 blocks (shallow->deep)'
    summary = pd.DataFrame(
        [dict(configuration='middle_out-forward-block-k3', family='middle_out', k=3,
              order='forward', granularity='unit')]
    )  # fmt: skip
    middle = families.Family('middle_out', 'middle-out', init='pretrained', selector='middle')
    with mock.patch.dict(families.BY_NAME, {'middle_out': middle}):
        assert conclusions.named(summary, 'middle_out-forward-block-k3') == '3 units (middle-out)'
    # targets by their data set's title; a set the catalogue lacks (a folder) by its name
    assert loaded.title('us') == 'simulated breast ultrasound (us)'
    assert loaded.title('xray') == 'simulated chest X-ray (xray)'
    loaded.plan['targets']['mine'] = {'data': {'name': 'folder'}}
    loaded.plan['external'] = {'b': {'of': ['us']}}
    assert loaded.title('mine') == 'mine'
    assert loaded.title('us_on_b') == 'b scored by the runs of simulated breast ultrasound (us)'
