"""Markdown and HTML from one template and the same data: report.j2 (the study's report) or
sources.j2 (pre-training sources compared, report.sources), which share blocks.j2.

The template says what the page holds and in which order; a format turns each element
(heading, paragraph, list, table, figure) into its markup. The HTML page is
self-contained: figures are embedded as base64 PNGs, nothing is fetched.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
import html
import os
import re

import jinja2

from unet_jax.report.conclusions import Finding
from unet_jax.report.figures import Figure
from unet_jax.report.tables import Table

TEMPLATE = 'report.j2'  # the study's report; sources.j2: the sources compared
# Cells that hold a number (0.81, < 0.001, 7e+11, 54%, 1.0x, 0.8 +- 0.1, [0.7, 0.9]): right-aligned.
NUMBER = re.compile(r'([-+<]\s?)?[\d.,]+(e[-+]?\d+)?(%|x| \+- [\d.]+)?|-|\[[-+\d., ]+\]')
STYLE = (
    'body{font-family:system-ui,sans-serif;max-width:1250px;margin:auto;padding:1em 2em;'
    'line-height:1.45;color:#222}'
    'h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}'
    'h3{margin-bottom:.3em}li{margin:.25em 0}'
    'table{border-collapse:collapse;font-size:13px;margin:.4em 0 .3em}'
    'caption{text-align:left;font-weight:600;padding:.3em 0}'
    'td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}'
    'th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap}'
    'p.note{font-size:12px;color:#555;margin-top:0}'
    'figure{margin:1em 0}figcaption{font-size:13px;color:#444;max-width:1000px}'
    'img{max-width:100%}'
    'details{font-size:13px;color:#444;margin:.1em 0 .4em}summary{cursor:pointer;color:#36c}'
    'p.primary{font-size:17px;background:#f4f8ff;border-left:4px solid #36c;padding:.5em .8em}'
)


class Markdown:
    def heading(self, level: int, text: str) -> str:
        return f'{"#" * level} {text}\n'

    def paragraph(self, text: str) -> str:
        return f'{text}\n'

    def bullets(self, items: Sequence[str]) -> str:
        return ''.join(f'- {item}\n' for item in items)

    def findings(self, items: Sequence[Finding]) -> str:
        """One line per claim, its evidence as an indented line beneath."""
        return ''.join(
            f'- {f.claim}\n' + (f'  - *Evidence:* {f.details}\n' if f.details else '')
            for f in items
        )

    def primary(self, text: str) -> str:
        return f'> {text}\n'

    def folded(self, summary: str, paragraphs: Sequence[str]) -> str:
        return f'*{summary}:*\n\n' + ''.join(f'{p}\n\n' for p in paragraphs)

    def table(self, table: Table) -> str:
        cell = lambda text: str(text).replace('|', '\\|')
        lines = [f'**{table.title}**', '', '| ' + ' | '.join(map(cell, table.columns)) + ' |']
        lines.append('|' + '---|' * len(table.columns))
        lines += ['| ' + ' | '.join(map(cell, row)) + ' |' for row in table.rows]
        if table.note:
            lines += ['', f'*{table.note}*']
        return '\n'.join(lines) + '\n'

    def figure(self, figure: Figure) -> str:
        return f'![{figure.file}]({figure.file})\n\n*{figure.caption}*\n'

    def document(self, body: str) -> str:
        return body


class Html:
    def __init__(self, folder: str, title: str = 'unet_jax study report'):
        self.folder = folder  # where the figures are, to embed them
        self.title = title  # the page's <title>

    def heading(self, level: int, text: str) -> str:
        return f'<h{level}>{html.escape(text)}</h{level}>'

    def paragraph(self, text: str) -> str:
        return f'<p>{html.escape(text)}</p>'

    def bullets(self, items: Sequence[str]) -> str:
        return '<ul>' + ''.join(f'<li>{html.escape(i)}</li>' for i in items) + '</ul>'

    def findings(self, items: Sequence[Finding]) -> str:
        """One line per claim; its evidence folded beneath it (<details>)."""
        return (
            '<ul>'
            + ''.join(
                f'<li>{html.escape(f.claim)}'
                + (
                    f'<details><summary>evidence</summary>{html.escape(f.details)}</details>'
                    if f.details
                    else ''
                )
                + '</li>'
                for f in items
            )
            + '</ul>'
        )

    def primary(self, text: str) -> str:
        return f'<p class="primary">{html.escape(text)}</p>'

    def folded(self, summary: str, paragraphs: Sequence[str]) -> str:
        """Paragraphs folded beneath a one-line summary (<details>)."""
        body = ''.join(f'<p>{html.escape(p)}</p>' for p in paragraphs)
        return f'<details class="stats"><summary>{html.escape(summary)}</summary>{body}</details>'

    def table(self, table: Table) -> str:
        head = ''.join(f'<th>{html.escape(c)}</th>' for c in table.columns)
        body = ''.join('<tr>' + ''.join(map(self._cell, row)) + '</tr>' for row in table.rows)
        note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ''
        caption = f'<caption>{html.escape(table.title)}</caption>'
        return f'<table>{caption}<tr>{head}</tr>{body}</table>{note}'

    def _cell(self, text: str) -> str:
        numeric = NUMBER.fullmatch(text) is not None
        return (
            f'<td class="num">{html.escape(text)}</td>'
            if numeric
            else f'<td>{html.escape(text)}</td>'
        )

    def figure(self, figure: Figure) -> str:
        with open(os.path.join(self.folder, figure.file), 'rb') as f:
            data = base64.b64encode(f.read()).decode('ascii')
        alt = html.escape(
            f'{figure.file}: {", ".join(figure.labels)}' if figure.labels else figure.file
        )
        return (
            f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f'<figcaption>{html.escape(figure.caption)}</figcaption></figure>'
        )

    def document(self, body: str) -> str:
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(self.title)}</title>'
            f'<style>{STYLE}</style></head><body>\n{body}</body></html>\n'
        )


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(os.path.dirname(__file__)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )


def render(fmt: Markdown | Html, template: str = TEMPLATE, **data) -> str:
    """A template (a file beside this module) with one format; `data` as the template names
    it."""
    text = environment().get_template(template).render(f=fmt, **data)
    if isinstance(fmt, Markdown):  # one blank line between blocks
        text = '\n\n'.join(block.strip('\n') for block in text.split('\n\n') if block.strip())
        text += '\n'
    return fmt.document(text)
