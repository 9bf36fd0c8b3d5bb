"""Self-contained HTML reports: headings, text, tables, figures and reproduction commands.

Every domain's CLI and ``strato demo`` build a :class:`Report` and :meth:`Report.write` it to a directory
as ``index.html`` plus one PNG per figure. The page has inline CSS and no scripts or external assets, so
it can be opened from disk, attached to an issue or archived next to the results it describes.

Figures are drawn with matplotlib's non-interactive Agg canvas attached to a bare
:class:`matplotlib.figure.Figure` (see :func:`new_figure`), never through ``pyplot``: selecting a backend
globally would change the behaviour of a user's own plotting in the same process.
"""

from __future__ import annotations

import html
import io
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import strato
from strato.errors import ConfigError, ConflictError

__all__ = ["FIGURE_DPI", "Report", "new_figure"]

FIGURE_DPI = 120
# Figure names become file names and URLs, so keep them to characters that are safe in both everywhere.
_FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BULLET = re.compile(r"^\s*[-*]\s+")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE_SPAN = re.compile(r"(`[^`\n]+`)")

_CSS = """
:root { color-scheme: light; }
body { margin: 0; background: #fafafa; color: #1f2328;
  font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 60rem; margin: 0 auto; padding: 2rem 1.5rem 3rem; background: #fff; }
h1 { font-size: 1.9rem; margin: 0 0 1.2rem; padding-bottom: .4rem; border-bottom: 2px solid #d0d7de; }
h2 { font-size: 1.4rem; margin: 2rem 0 .7rem; padding-bottom: .25rem; border-bottom: 1px solid #d8dee4; }
h3 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; }
h4 { font-size: 1rem; margin: 1.3rem 0 .4rem; }
p, ul { margin: .6rem 0; }
a { color: #0969da; }
code { font: .9em/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f3f4f6; padding: .1em .3em; border-radius: 4px; }
pre { background: #f6f8fa; border: 1px solid #d8dee4; border-radius: 6px; padding: .8rem 1rem;
  overflow-x: auto; }
pre code { background: none; padding: 0; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: .92rem; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .4rem; }
th, td { padding: .35rem .7rem; border-bottom: 1px solid #e1e4e8; text-align: left; vertical-align: top; }
th { background: #f6f8fa; border-bottom: 2px solid #d0d7de; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.empty { color: #656d76; font-style: italic; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e1e4e8; border-radius: 4px; }
figcaption { color: #424a53; font-size: .92rem; margin-top: .4rem; }
footer { margin-top: 3rem; color: #656d76; font-size: .85rem; }
""".strip()


def new_figure(width: float = 6.4, height: float = 4.2) -> Figure:
    """A blank figure of ``width`` x ``height`` inches, drawn with Agg and laid out automatically.

    Use ``fig.add_subplot()`` / ``fig.subplots()`` on it, then pass it to :meth:`Report.add_figure`.
    """
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise ConfigError(f"figure size must be positive, got {width!r} x {height!r} inches")
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, then render `code`, **bold** and [links](https://...)."""
    parts: list[str] = []
    for piece in _CODE_SPAN.split(text):
        if len(piece) > 2 and piece.startswith("`") and piece.endswith("`"):
            parts.append(f"<code>{html.escape(piece[1:-1])}</code>")
            continue
        escaped = html.escape(piece)
        # Only http(s) links, so that text from a trace or a user cannot smuggle in a javascript: URL.
        escaped = _LINK.sub(r'<a href="\2">\1</a>', escaped)
        escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
        parts.append(escaped)
    return "".join(parts)


def _render_text(text: str) -> str:
    blocks = [block for block in re.split(r"\n\s*\n", text.strip()) if block.strip()]
    out: list[str] = []
    for block in blocks:
        lines = block.splitlines()
        if all(_BULLET.match(line) for line in lines):
            items = "".join(f"<li>{_inline(_BULLET.sub('', line))}</li>" for line in lines)
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(out)


def _is_number(value: object) -> bool:
    numeric = isinstance(value, int | float | np.integer | np.floating)
    return numeric and not isinstance(value, bool | np.bool_)


def _default_format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float | np.floating) and not isinstance(value, bool):
        # Six significant digits stays out of scientific notation for everything from 1e-4 to 1e6,
        # which covers the latencies, ratios and counts our reports show.
        return format(float(value), ".6g")
    return str(value)


def _format_cell(value: object, spec: str | None, column: str) -> str:
    if spec is None or value is None:
        return _default_format(value)
    try:
        # "{:.1f} ms" style templates allow units; bare specs (".3f", ",", ".1%") are shorter to write.
        return spec.format(value) if "{" in spec else format(value, spec)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ConfigError(f"cannot format {value!r} in column {column!r} with {spec!r}: {exc}") from exc


@dataclass
class _FigureBlock:
    figure: Figure
    name: str
    caption: str | None
    png: bytes | None = field(default=None, repr=False)

    def render_png(self, dpi: int) -> bytes:
        # Rendered once and cached: the figure is closed afterwards, and writing the same report to a
        # second directory must still work.
        if self.png is None:
            buffer = io.BytesIO()
            self.figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
            self.png = buffer.getvalue()
            # Only figures made through pyplot are registered with it; closing those frees their memory.
            # Importing pyplot ourselves would pick a GUI backend as a side effect, so only touch it if
            # the user already has.
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is not None:
                pyplot.close(self.figure)
        return self.png


class Report:
    """An HTML report built block by block, in the order the ``add_*`` methods are called.

    >>> report = Report("Keep-alive policies on the Azure Functions trace")
    >>> report.add_text("The **hybrid** policy halves cold starts.")
    >>> report.add_table([{"policy": "fixed-10m", "cold_start_pct": 6.31}], formats={"cold_start_pct": ".1f"})
    >>> index = report.write("out/report")  # doctest: +SKIP
    """

    def __init__(self, title: str, *, dpi: int = FIGURE_DPI) -> None:
        self.title = str(title)
        self.dpi = int(dpi)
        self._blocks: list[str | _FigureBlock] = []
        self._figure_names: set[str] = set()

    def add_heading(self, text: str, level: int = 2) -> None:
        """A section heading; ``level`` 2 to 4 (level 1 is the report title)."""
        if level not in (2, 3, 4):
            raise ConfigError(f"heading level must be 2, 3 or 4, got {level!r}")
        self._blocks.append(f"<h{level}>{html.escape(str(text))}</h{level}>")

    def add_text(self, text: str) -> None:
        """Paragraphs of plain text with a little Markdown.

        Blank lines separate paragraphs; a paragraph whose lines all start with ``- `` or ``* `` is a
        bullet list; inline ```code```, ``**bold**`` and ``[label](https://...)`` links are rendered.
        Everything else, including any HTML, is escaped and shown literally.
        """
        rendered = _render_text(str(text))
        if rendered:
            self._blocks.append(rendered)

    def add_table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        caption: str | None = None,
        formats: Mapping[str, str] | None = None,
    ) -> None:
        """A table with one row per mapping in ``rows``.

        ``columns`` picks and orders the columns; by default every key, in order of first appearance.
        A missing key or ``None`` shows as an empty cell. ``formats`` maps a column to a format spec,
        either as for :func:`format` (``".3f"``, ``","``, ``".1%"``) or a template (``"{:.1f} ms"``);
        unformatted floats show six significant digits. Cells are formatted now, so later changes to
        ``rows`` do not affect the report and a bad spec fails here, next to the code that passed it.
        """
        if columns is None:
            seen: dict[str, None] = {}
            for row in rows:
                seen.update(dict.fromkeys(row))
            columns = list(seen)
        columns = [str(column) for column in columns]
        formats = dict(formats or {})
        unknown = sorted(set(formats) - set(columns))
        if unknown:
            raise ConfigError(f"formats given for columns not in the table: {', '.join(unknown)}")

        cells = [
            [
                (_format_cell(row.get(column), formats.get(column), column), _is_number(row.get(column)))
                for column in columns
            ]
            for row in rows
        ]
        numeric_columns = [
            any(numeric for _, numeric in (line[index] for line in cells)) for index in range(len(columns))
        ]

        parts = ['<div class="table-wrap"><table>']
        if caption:
            parts.append(f"<caption>{_inline(str(caption))}</caption>")
        if columns:
            header = "".join(
                f'<th class="num">{html.escape(column)}</th>'
                if numeric
                else f"<th>{html.escape(column)}</th>"
                for column, numeric in zip(columns, numeric_columns, strict=True)
            )
            parts.append(f"<thead><tr>{header}</tr></thead>")
        parts.append("<tbody>")
        for line in cells:
            row_html = "".join(
                f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"
                for text, numeric in line
            )
            parts.append(f"<tr>{row_html}</tr>")
        if not cells:
            parts.append(f'<tr><td class="empty" colspan="{max(len(columns), 1)}">no rows</td></tr>')
        parts.append("</tbody></table></div>")
        self._blocks.append("".join(parts))

    def add_figure(self, fig: Figure, name: str, caption: str | None = None) -> None:
        """A figure, saved as ``<name>.png`` (at :attr:`dpi`) next to ``index.html`` when written.

        The figure is closed after it is rendered, so do not reuse it. ``name`` must be unique within the
        report and made of letters, digits, ``.``, ``_`` and ``-``; a trailing ``.png`` is dropped.
        """
        if not isinstance(fig, Figure):
            raise ConfigError(f"add_figure needs a matplotlib Figure, got {type(fig).__name__}")
        name = str(name).removesuffix(".png")
        if not _FIGURE_NAME.match(name):
            raise ConfigError(f"figure name {name!r} must be letters, digits, '.', '_' or '-'")
        if name in self._figure_names:
            raise ConflictError(f"a figure named {name!r} is already in this report")
        self._figure_names.add(name)
        self._blocks.append(_FigureBlock(fig, name, caption))

    def add_code(self, text: str) -> None:
        """A preformatted block, e.g. the exact command that reproduces a number in the report."""
        code = html.escape(str(text).strip("\n"))
        self._blocks.append(f"<pre><code>{code}</code></pre>")

    def to_html(self) -> str:
        """The complete ``index.html`` page as a string (figures are referenced, not embedded)."""
        body: list[str] = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self._blocks:
            if isinstance(block, _FigureBlock):
                src = html.escape(f"{block.name}.png")
                alt = html.escape(block.caption or block.name)
                caption = f"<figcaption>{_inline(block.caption)}</figcaption>" if block.caption else ""
                body.append(f'<figure><img src="{src}" alt="{alt}">{caption}</figure>')
            else:
                body.append(block)
        body.append(f"<footer>Generated by strato {html.escape(strato.__version__)}.</footer>")
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
        )

    def write(self, directory: str | Path) -> Path:
        """Write ``index.html`` and the figures' PNGs into ``directory`` (created if needed).

        Returns the path of ``index.html``.
        """
        out = Path(directory)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create report directory {str(out)!r}: {exc}") from exc
        for block in self._blocks:
            if isinstance(block, _FigureBlock):
                (out / f"{block.name}.png").write_bytes(block.render_png(self.dpi))
        index = out / "index.html"
        index.write_text(self.to_html(), encoding="utf-8")
        return index
