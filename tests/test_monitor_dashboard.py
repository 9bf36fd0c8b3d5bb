"""The ``strato monitor serve`` dashboard in a real browser (Playwright driving Debian's chromium), over a
real server process and a real gmond: pages, charts, login, and actions from the form."""

from __future__ import annotations

import os
import re
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from monitor_helpers import collector
from monitor_server_helpers import FLEET, WEB, MonitorServer, monitor_server, spoof_hosts, wait_until

pytestmark = pytest.mark.system

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip
WEB_RULE = 'name matches "web-*"'
WEB_NAMES = [host.name for host in WEB]
GROUPS = {"web": {"rule": WEB_RULE}, "frontend": {"rule": 'role == "frontend"'}, "db": {"members": ["db-1"]}}


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright; no browser download needed)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian package chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    problem = _missing_browser()
    if problem is not None:
        if os.environ.get("STRATO_REQUIRE_SYSTEM") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's chromium, never a downloaded one.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context (no cookies) per test; uncaught page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the dashboard: {errors}"


@contextmanager
def dashboard(tmp_path: Path) -> Iterator[MonitorServer]:
    """A collector with the spoofed fleet and a server with the web, frontend and db groups."""
    with (
        collector(tmp_path, metrics=()) as gmond,
        monitor_server(tmp_path, gmond.xml_address) as server,
    ):
        spoof_hosts(gmond.udp_address, server)
        with server.client() as admin:
            for name, body in GROUPS.items():
                created = admin.post("/api/groups", json={"name": name, **body})
                assert created.status_code == 201, created.text
        yield server


def cells(page: Page, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(f"{selector} td").all_inner_texts()]


def log_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login")


def test_pages_show_groups_hosts_aggregates_and_charts(tmp_path: Path, page: Page) -> None:
    with dashboard(tmp_path) as server:
        server.wait_polls(4)  # a few points of history for the charts
        groups = {group["name"]: group for group in server.get("/api/groups")}

        page.goto(server.url + "/")
        assert page.title() == "strato monitor"
        assert page.locator("#groups tr[data-group]").count() == len(groups)
        for name, group in groups.items():
            row = page.locator(f'#groups tr[data-group="{name}"]')
            assert row.locator("td.members").inner_text() == str(len(group["members"]))
            assert row.locator("a").get_attribute("href") == f"/groups/{name}"
        assert page.locator("#poll-error").count() == 0
        assert "polls, 0 failed" in page.locator("#poll-status").inner_text()

        page.click('header a[href="/hosts"]')
        page.wait_for_url(server.url + "/hosts")
        for host in FLEET:
            row = cells(page, f'#hosts tr[data-host="{host.name}"]')
            expected = sorted(name for name, group in groups.items() if host.name in group["members"])
            assert row[:4] == [host.name, host.ip, "strato", "up"], row
            assert row[5].split() == expected, row
        row = page.locator('#hosts tr[data-host="web-1"]')
        assert sorted(row.locator("a").all_inner_texts()) == ["frontend", "web"]

        page.goto(server.url + "/groups/web")
        assert page.locator("#group-name").inner_text() == "web"
        assert page.locator("#group-rule").inner_text() == WEB_RULE
        shown = page.locator("#members tr[data-host]")
        assert [shown.nth(i).get_attribute("data-host") for i in range(shown.count())] == WEB_NAMES
        for host in WEB:
            assert cells(page, f'#members tr[data-host="{host.name}"]')[:3] == [host.name, host.ip, "up"]
        aggregate = cells(page, '#aggregates tr[data-metric="load_one"]')
        api = server.get("/api/groups/web")["aggregates"]["load_one"]
        assert aggregate[0] == "load_one" and aggregate[1] == "3"
        mean = float(aggregate[3])  # printed with 4 significant digits
        assert mean == pytest.approx(api["mean"], rel=1e-3)
        assert mean == pytest.approx(statistics.mean(host.load_one for host in WEB), rel=1e-3)
        assert (float(aggregate[4]), float(aggregate[5])) == (api["min"], api["max"])

        def chart_drawn() -> bool:
            if page.locator("#charts svg polyline").count() == 0:
                page.reload()
                return False
            return True

        wait_until(chart_drawn, timeout_s=10, interval_s=0.3, what="an SVG chart with a polyline")
        charts = page.locator("#charts svg")
        assert charts.count() == 2  # load_one (mean, min-max band) and members up
        assert "load_one" in (charts.first.get_attribute("aria-label") or "")
        points = page.locator("#charts svg polyline").first.get_attribute("points") or ""
        assert len(points.split()) >= 2
        assert page.locator("#charts svg polygon.chart-band").count() == 1

        screenshot = tmp_path / "group-web.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_action_from_the_form_after_logging_in(tmp_path: Path, page: Page) -> None:
    with dashboard(tmp_path) as server:
        page.goto(server.url + "/groups/web")
        assert page.locator("text=Log in").first.is_visible()
        page.fill("#operator", "dora")
        page.click("#run-action")
        # Not logged in: the form goes to the login page, which comes back here afterwards.
        page.wait_for_url(server.url + "/login?next=/groups/web")
        assert server.get("/api/actions") == []

        log_in(page, "not-the-token")
        assert page.locator("#login-error").inner_text() == "That is not the admin token."
        log_in(page, server.token)
        page.wait_for_url(server.url + "/groups/web")
        assert page.locator("header button", has_text="log out").is_visible()

        message = "hello from the dashboard; $(id) `uname` <b>&"
        page.fill("#operator", "dora")
        page.select_option("#template", "echo")
        field = page.locator('input[name="param.echo.message"]')
        assert field.is_visible() and page.locator('input[name="param.df.path"]').is_hidden()
        field.fill(message)
        page.click("#run-action")
        page.wait_for_url(re.compile(re.escape(server.url) + r"/actions/\d+$"))
        action_id = int(page.url.rsplit("/", 1)[1])

        # The page refreshes itself while the action runs.
        def done() -> bool:
            status = page.locator("#action-status").inner_text()
            if status == "running":
                page.reload()
                return False
            return True

        wait_until(done, timeout_s=15, interval_s=0.2, what=f"action {action_id} to finish on its page")
        assert page.locator("#action-status").inner_text() == "ok"
        rows = page.locator("#results tr[data-host]")
        assert [rows.nth(i).get_attribute("data-host") for i in range(rows.count())] == WEB_NAMES
        for host in WEB_NAMES:
            row = cells(page, f'#results tr[data-host="{host}"]')
            assert row[0] == host and row[1] == "0", row
            assert row[3] == message, row
        assert "dora (web 127.0.0.1)" in page.locator("main").inner_text()

        audit: list[dict[str, Any]] = server.get("/api/actions")
        assert [record["id"] for record in audit] == [action_id]
        record = audit[0]
        assert "dora" in record["who"] and "(web " in record["who"]
        assert (record["group"], record["template"], record["status"]) == ("web", "echo", "ok")
        assert record["params"] == {"message": message} and record["members"] == WEB_NAMES


def test_invalid_parameter_from_the_form_is_refused_and_audited(tmp_path: Path, page: Page) -> None:
    with dashboard(tmp_path) as server:
        page.goto(server.url + "/login?next=/groups/web")
        log_in(page, server.token)
        page.wait_for_url(server.url + "/groups/web")

        page.fill("#operator", "erin")
        page.select_option("#template", "df")
        page.fill('input[name="param.df.path"]', "/; rm -rf /")
        with page.expect_navigation() as navigation:
            page.click("#run-action")
        response = navigation.value
        assert response is not None and response.status == 400
        error = page.locator("#action-error")
        expected = "parameter 'path': value '/; rm -rf /' does not match the allowed pattern"
        assert expected in error.inner_text()
        assert page.locator("#group-name").inner_text() == "web"  # still the group page, form and all
        assert page.locator("#action-form").is_visible()
        assert "rejected" in page.locator("#actions").inner_text()

        audit: list[dict[str, Any]] = server.get("/api/actions")
        assert len(audit) == 1, audit  # nothing ran: the only record is the refusal
        record = audit[0]
        assert record["status"] == "rejected" and record["results"] == [] and record["argv"] == []
        assert record["error"].startswith(expected) and record["template"] == "df"
        assert record["params"] == {"path": "/; rm -rf /"} and "erin (web " in record["who"]
