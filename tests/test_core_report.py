from __future__ import annotations

import math
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from strato.core.report import Report, new_figure
from strato.errors import ConfigError, ConflictError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageParser(HTMLParser):
    """Collects what the tests look at: table cells per table, images, tags seen, and all text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell_classes: list[str | None] = []
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.links: list[str | None] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            self.cell_classes.append(dict(attrs).get("class"))
        elif tag == "img":
            self.images.append(dict(attrs))
        elif tag == "a":
            self.links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(html_text: str) -> PageParser:
    parser = PageParser()
    parser.feed(html_text)
    parser.close()
    return parser


def sample_figure() -> Figure:
    fig = new_figure()
    ax = fig.add_subplot()
    x = np.linspace(0, 10, 200)
    ax.plot(x, np.sin(x), label="sin")
    ax.set_xlabel("time (s)")
    ax.legend()
    return fig


def test_report_with_table_and_figure(tmp_path: Path) -> None:
    report = Report("Keep-alive <policies>")
    report.add_heading("Results")
    report.add_text("The **hybrid** policy wins.")
    report.add_table(
        [
            {"policy": "fixed-10m", "cold_pct": 6.3125, "apps": 1200},
            {"policy": "hybrid", "cold_pct": 2.5, "apps": 1200, "note": "best"},
        ],
        caption="Cold starts by policy",
        formats={"cold_pct": ".1f", "apps": ","},
    )
    report.add_figure(sample_figure(), "cold-starts", caption="Cold starts over time")
    report.add_code("strato faas simulate --policy hybrid")

    index = report.write(tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    page = parse(index.read_text(encoding="utf-8"))

    assert page.tables == [
        [
            ["policy", "cold_pct", "apps", "note"],
            ["fixed-10m", "6.3", "1,200", ""],
            ["hybrid", "2.5", "1,200", "best"],
        ]
    ]
    assert page.images == [{"src": "cold-starts.png", "alt": "Cold starts over time"}]
    assert "Keep-alive <policies>" in page.text  # title, escaped then decoded by the parser
    assert "strato faas simulate --policy hybrid" in page.text
    assert "script" not in page.tags and "link" not in page.tags

    png = (tmp_path / "out" / "cold-starts.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 5_000


def test_png_size_follows_dpi(tmp_path: Path) -> None:
    report = Report("dpi")
    fig = new_figure(4.0, 2.0)
    fig.add_subplot().plot([0, 1], [0, 1])
    report.add_figure(fig, "line.png")  # a .png suffix is accepted and not doubled
    report.write(tmp_path)
    png = (tmp_path / "line.png").read_bytes()
    # Width and height are big-endian ints at bytes 16..24 of the IHDR chunk. bbox_inches="tight" trims
    # empty margins and pads by 0.1 in, so compare against 4 x 2 in at 120 dpi = 480 x 240 loosely.
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert 400 < width <= 480 + 24 and 180 < height <= 240 + 24


def test_text_is_escaped(tmp_path: Path) -> None:
    report = Report("Escaping")
    report.add_text("<script>alert('x')</script> & `<b>code</b>`")
    report.add_heading("<script>heading</script>")
    report.add_code("<script>code()</script>")
    report.add_table([{"<script>col</script>": "<script>cell</script>"}])
    html_text = report.write(tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp;" in html_text
    assert "<code>&lt;b&gt;code&lt;/b&gt;</code>" in html_text
    page = parse(html_text)
    assert "script" not in page.tags and "b" not in page.tags
    assert page.tables == [[["<script>col</script>"], ["<script>cell</script>"]]]


def test_markdownish_text() -> None:
    report = Report("Text")
    report.add_text(
        "First paragraph\ncontinues here with **bold**.\n\n"
        "- item one\n- item `two`\n\n"
        "See [the paper](https://www.usenix.org/conference/atc20) or [bad](javascript:alert(1))."
    )
    html_text = report.to_html()
    assert "<p>First paragraph continues here with <strong>bold</strong>.</p>" in html_text
    assert "<ul><li>item one</li><li>item <code>two</code></li></ul>" in html_text
    page = parse(html_text)
    assert page.links == ["https://www.usenix.org/conference/atc20"]
    assert "javascript" not in str(page.links)


def test_table_defaults_and_numeric_alignment() -> None:
    report = Report("Table")
    report.add_table(
        [
            {"name": "a", "value": 1 / 3, "n": np.int64(5), "flag": True, "missing": None},
            {"name": "b", "value": math.nan, "n": 7, "flag": False},
        ],
    )
    page = parse(report.to_html())
    assert page.tables == [
        [
            ["name", "value", "n", "flag", "missing"],
            ["a", "0.333333", "5", "True", ""],
            ["b", "nan", "7", "False", ""],
        ]
    ]
    # Header and cells of numeric columns are right-aligned via the "num" class; text and bools are not.
    assert page.cell_classes[:5] == [None, "num", "num", None, None]


def test_table_column_selection_and_templates() -> None:
    report = Report("Table")
    report.add_table(
        [{"a": 1, "b": 2.0, "c": 3}],
        columns=["c", "b"],
        formats={"b": "{:.2f} ms"},
    )
    assert parse(report.to_html()).tables == [[["c", "b"], ["3", "2.00 ms"]]]


def test_table_rows_are_copied_at_add_time() -> None:
    rows = [{"a": 1}]
    report = Report("Table")
    report.add_table(rows)
    rows[0]["a"] = 99
    assert parse(report.to_html()).tables == [[["a"], ["1"]]]


def test_empty_table_says_so() -> None:
    report = Report("Table")
    report.add_table([], columns=["policy", "cold_pct"])
    page = parse(report.to_html())
    assert page.tables == [[["policy", "cold_pct"], ["no rows"]]]


def test_table_errors() -> None:
    report = Report("Table")
    with pytest.raises(ConfigError, match="not in the table"):
        report.add_table([{"a": 1}], formats={"b": ".1f"})
    with pytest.raises(ConfigError, match="column 'a'"):
        report.add_table([{"a": "text"}], formats={"a": ".1f"})


def test_figure_errors() -> None:
    report = Report("Figures")
    report.add_figure(new_figure(), "one")
    with pytest.raises(ConflictError, match="already"):
        report.add_figure(new_figure(), "one")
    with pytest.raises(ConfigError, match="figure name"):
        report.add_figure(new_figure(), "../escape")
    with pytest.raises(ConfigError, match="figure name"):
        report.add_figure(new_figure(), "")
    with pytest.raises(ConfigError, match="Figure"):
        report.add_figure("not a figure", "two")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="heading level"):
        report.add_heading("x", level=1)
    with pytest.raises(ConfigError, match="figure size"):
        new_figure(0, 3)


def test_write_twice_reuses_rendered_figure(tmp_path: Path) -> None:
    report = Report("Twice")
    report.add_figure(sample_figure(), "plot")
    report.write(tmp_path / "a")
    report.write(tmp_path / "b")
    assert (tmp_path / "a" / "plot.png").read_bytes() == (tmp_path / "b" / "plot.png").read_bytes()


def test_write_into_a_file_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="report directory"):
        Report("x").write(blocker / "sub")


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter, so matplotlib's process-wide state starts clean."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return result.stdout.strip()


def test_report_does_not_import_pyplot(tmp_path: Path) -> None:
    # Importing pyplot would select a backend for the whole process; the report path must not do it.
    code = (
        "import sys;"
        "from strato.core.report import Report, new_figure;"
        "r = Report('x'); f = new_figure(); f.add_subplot().plot([1, 2]); r.add_figure(f, 'p');"
        f"r.write({str(tmp_path)!r});"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    assert run_python(code) == "False"
    assert (tmp_path / "p.png").read_bytes().startswith(PNG_MAGIC)


def test_pyplot_figures_are_closed_after_rendering(tmp_path: Path) -> None:
    code = (
        "import matplotlib.pyplot as plt;"
        "from strato.core.report import Report;"
        "fig = plt.figure(); fig.add_subplot().plot([1, 2, 3]);"
        "r = Report('pyplot'); r.add_figure(fig, 'from-pyplot');"
        f"r.write({str(tmp_path)!r});"
        "print(plt.fignum_exists(fig.number))"
    )
    assert run_python(code) == "False"
    assert (tmp_path / "from-pyplot.png").read_bytes().startswith(PNG_MAGIC)
