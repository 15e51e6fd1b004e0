"""Tests for the local server's web view (GET /, /view/app.js, /view/style.css, /api/events).

The page is driven in a real headless Chromium through Selenium. Events reach the server
the way an application sends them: log records through a `PostHogHandler`, inside
contexts that identify the person and the session. The browser is shared by the tests of
a module (one per xdist worker); each test gets its own server and leaves the browser on
``about:blank``, so that no page keeps polling a server that has stopped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.demo import shop_session
from posthog_logging.events import uuid7
from posthog_logging.server import LocalServer

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver import Chrome
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"selenium cannot be imported ({exc})", allow_module_level=True)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
for _binary in (CHROMIUM, CHROMEDRIVER):
    if not os.access(_binary, os.X_OK):  # pragma: no cover - depends on the environment
        pytest.skip(f"{_binary} is missing: the web view tests need it", allow_module_level=True)

WAIT = 10.0  # seconds to wait for the page; it polls the server every second
SHOP_EVENTS = ["checkout_completed", "$exception", "$exception", "checkout_started", "page_viewed"]
"""What one `shop_session` shows, newest on top."""
PAYMENT = "PaymentDeclined: could not charge 49.90 EUR"
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=2">'
XSS_PERSON = "<b>bold</b>"
XSS_EVENT = '<img src=x onerror="window.__pwned=3">'

# One object per row of the table, read in one go so that a re-render cannot stale it.
ROWS_JS = """
return Array.from(document.querySelectorAll('#event-rows tr.event'), (row) => {
  const link = row.cells[3].querySelector('a');
  return {time: row.cells[0].textContent, event: row.cells[1].textContent,
          person: row.cells[2].textContent, session: link ? link.title : '',
          summary: row.cells[4].textContent};
});
"""
FIND_ROW_JS = """
return Array.from(document.querySelectorAll('#event-rows tr.event')).find(
  (row) => row.cells[1].textContent === arguments[0]
    && row.cells[2].textContent === arguments[1]
    && row.cells[4].textContent.startsWith(arguments[2])) || null;
"""


# -- browser and fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    """One headless Chromium for the module, with a fresh profile and its console kept."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def page(driver: Chrome, server: LocalServer) -> Iterator[Chrome]:
    """The browser with an empty console; on ``about:blank`` again before the server stops."""
    driver.get("about:blank")
    console(driver)  # what earlier tests left in the console
    yield driver
    driver.get("about:blank")


@pytest.fixture
def app_log(default_client: Client, attach: Callable[..., logging.Logger]) -> logging.Logger:
    """An application logger whose records go, through a PostHogHandler, to ``server``."""
    return attach(PostHogHandler(client=default_client))


@pytest.fixture
def shop(
    default_client: Client, attach: Callable[..., logging.Logger], server: LocalServer
) -> Iterator[Callable[[str, str], None]]:
    """Run the demo's `shop_session` with its logger sending to ``server``; wait for its
    five events to be stored."""
    demo_log = logging.getLogger("demo.shop")
    propagate, level = demo_log.propagate, demo_log.level
    attach(PostHogHandler(client=default_client), name="demo.shop")

    def visit(user: str, session: str) -> None:
        before = server.store.count()
        shop_session(user, session)
        assert default_client.flush(WAIT)
        server.wait_for_events(before + len(SHOP_EVENTS), timeout=WAIT)

    yield visit
    demo_log.propagate, demo_log.level = propagate, level


# -- helpers ---------------------------------------------------------------------------


def open_view(driver: Chrome, server: LocalServer) -> None:
    """Load the page and wait for its first answer from the server."""
    driver.get(f"{server.url}/")
    wait_for(
        driver,
        lambda d: "log lines shown" in d.find_element(By.ID, "status").text,
        "the page's first poll",
    )


def wait_for(driver: Chrome, condition: Callable[[Chrome], Any], what: str) -> Any:
    """Wait until ``condition(driver)`` is truthy and return it; fail saying what was awaited."""
    try:
        return WebDriverWait(
            driver, WAIT, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
        ).until(condition)
    except TimeoutException:
        raise AssertionError(
            f"timed out after {WAIT:g}s waiting for {what}; the page shows {shown(driver)}"
        ) from None


def shown(driver: Chrome) -> list[dict[str, str]]:
    """The rows of the table, top to bottom."""
    rows: list[dict[str, str]] = driver.execute_script(ROWS_JS)
    return rows


def wait_rows(
    driver: Chrome, condition: Callable[[list[dict[str, str]]], bool], what: str
) -> list[dict[str, str]]:
    """Wait until the rows shown satisfy ``condition`` and return them."""
    found: list[dict[str, str]] = wait_for(
        driver, lambda d: (rows := shown(d)) and condition(rows) and rows, what
    )
    return found


def console(driver: Chrome) -> list[dict[str, Any]]:
    """What the page logged to the browser console since the last call."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def names(rows: list[dict[str, str]]) -> list[str]:
    return [row["event"] for row in rows]


def find_row(driver: Chrome, event: str, person: str, summary: str = "") -> WebElement:
    """The row of ``event`` by ``person`` whose summary starts with ``summary``."""
    row: WebElement = wait_for(
        driver,
        lambda d: d.execute_script(FIND_ROW_JS, event, person, summary),
        f"a row {event!r} by {person!r}",
    )
    return row


def open_details(driver: Chrome, row: WebElement) -> WebElement:
    """Click a row (on its event name, away from the session link) and return its details."""
    row.find_element(By.CSS_SELECTOR, "td.name").click()
    details: WebElement = wait_for(
        driver,
        lambda d: d.execute_script(
            "const next = arguments[0].nextElementSibling;"
            " return next && next.classList.contains('details') ? next : null;",
            row,
        ),
        "the row's details",
    )
    return details


def text(element: WebElement) -> str:
    """The element's exact text (``.text`` would collapse white space)."""
    return str(element.get_property("textContent"))


def classes(element: WebElement) -> set[str]:
    return set(str(element.get_property("className")).split())


def set_filter(driver: Chrome, field: str, value: str) -> None:
    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(value)


def clear_filters(driver: Chrome) -> None:
    driver.find_element(By.ID, "clear-filters").click()


def stored_exception(server: LocalServer, person: str, first_type: str) -> dict[str, Any]:
    """The stored ``$exception`` by ``person`` whose first exception has ``first_type``."""
    [event] = [
        event
        for event in server.events(event="$exception", distinct_id=person)
        if event["properties"]["$exception_list"][0]["type"] == first_type
    ]
    return event


def check_exception_details(details: WebElement, event: dict[str, Any]) -> None:
    """The details show every exception of ``event``, with its frames and source context,
    then the other properties as JSON."""
    entries = event["properties"]["$exception_list"]
    sections = details.find_elements(By.CSS_SELECTOR, "section.exc")
    assert len(sections) == len(entries)
    for section, entry in zip(sections, entries, strict=True):
        heading = section.find_element(By.TAG_NAME, "h3")
        assert text(heading) == f"{entry['type']}: {entry['value']}"
        mechanism = entry["mechanism"]
        assert text(section.find_element(By.CSS_SELECTOR, ".mechanism")) == (
            f"mechanism: {mechanism['type']} · handled: {_js(mechanism['handled'])}"
        )
        frames = section.find_elements(By.CSS_SELECTOR, ".frame")
        assert len(frames) == len(entry["stacktrace"]["frames"])
        for box, frame in zip(frames, entry["stacktrace"]["frames"], strict=True):
            where = text(box.find_element(By.CSS_SELECTOR, ".where"))
            assert where == f"{frame['function']}  {frame['filename']}:{frame['lineno']}"
            assert ("in-app" in classes(box)) is frame["in_app"]
            lines = [*frame["pre_context"], frame["context_line"], *frame["post_context"]]
            code = box.find_element(By.CSS_SELECTOR, "pre.code")
            assert text(code) == "".join(f"{line}\n" for line in lines)
            [current] = code.find_elements(By.CSS_SELECTOR, ".current")
            assert text(current) == f"{frame['context_line']}\n"
    properties = details.find_element(By.CSS_SELECTOR, "pre.properties")
    expected = {k: v for k, v in event["properties"].items() if k != "$exception_list"}
    assert json.loads(text(properties)) == expected
    assert f"uuid {event['uuid']}" in text(details)


def _js(value: Any) -> str:
    """How the page's template strings print a JSON value."""
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, from its header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- tests -----------------------------------------------------------------------------


class TestLiveFeed:
    def test_events_appear_without_reloading(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """Events logged after the page is open appear in it, newest on top, with no reload."""
        open_view(page, server)
        assert page.find_element(By.ID, "empty").is_displayed()
        assert shown(page) == []
        page.execute_script("window.__sameDocument = true")
        session = uuid7()

        with posthog_logging.new_context():
            posthog_logging.identify_context("user_1")
            posthog_logging.set_context_session(session)
            posthog_logging.tag("plan", "pro")
            app_log.info("signed in", extra={"event": "signed_in", "method": "password"})
        [row] = wait_rows(page, lambda rows: len(rows) == 1, "the first event")
        assert row["event"] == "signed_in"
        assert row["person"] == "user_1"
        assert row["session"] == session
        assert 'plan="pro"' in row["summary"]
        assert 'method="password"' in row["summary"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,3})?", row["time"])
        assert not page.find_element(By.ID, "empty").is_displayed()

        with posthog_logging.new_context():
            posthog_logging.identify_context("user_2")
            app_log.info("report_exported", extra={"event": True, "rows": 12})
        rows = wait_rows(page, lambda rows: len(rows) == 2, "the second event")
        assert names(rows) == ["report_exported", "signed_in"]
        assert rows[0]["person"] == "user_2"
        assert rows[0]["summary"] == "rows=12"
        assert page.execute_script("return window.__sameDocument") is True
        assert "2 events, 0 log lines shown" in page.find_element(By.ID, "status").text

    def test_clicking_a_row_again_closes_its_details(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """A second click on an event's row hides the details the first click opened."""
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_1")
            app_log.info("page_viewed", extra={"event": True, "page": "/docs"})
        row = find_row(page, "page_viewed", "user_1")
        details = open_details(page, row)
        assert '"page": "/docs"' in text(details)
        row.find_element(By.CSS_SELECTOR, "td.name").click()
        wait_for(page, lambda d: not d.find_elements(By.CSS_SELECTOR, "tr.details"), "no details")


class TestExceptionDetails:
    def test_exception_shows_its_chain_frames_and_source(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """An exception's details show type, message, the chained cause, and frames with
        their source lines, the raising line marked and the application's frames highlighted."""
        open_view(page, server)
        shop("user_42", uuid7())
        rows = wait_rows(page, lambda rows: len(rows) == 5, "the shop's events")
        assert names(rows) == SHOP_EVENTS
        event = stored_exception(server, "user_42", "PaymentDeclined")
        row = find_row(page, "$exception", "user_42", PAYMENT)
        assert text(row.find_element(By.CSS_SELECTOR, "td.summary")) == f"{PAYMENT} (+1 chained)"
        assert "exception" in classes(row)

        details = open_details(page, row)
        headings = [text(h) for h in details.find_elements(By.CSS_SELECTOR, "section.exc h3")]
        assert headings == [PAYMENT, "ConnectionResetError: payment provider closed the connection"]
        check_exception_details(details, event)
        frames = details.find_elements(By.CSS_SELECTOR, ".frame")
        assert frames, "no frames shown"
        assert all("in-app" in classes(frame) for frame in frames)
        wheres = [text(frame.find_element(By.CSS_SELECTOR, ".where")) for frame in frames]
        assert any(re.fullmatch(r"_charge  \S*demo\.py:\d+", where) for where in wheres)
        assert any(re.fullmatch(r"shop_session  \S*demo\.py:\d+", where) for where in wheres)
        currents = [text(c) for c in details.find_elements(By.CSS_SELECTOR, ".current")]
        assert (
            '        raise PaymentDeclined(f"could not charge {amount} EUR") from exc\n' in currents
        )
        # The style sheet applies: the raising line and the application's frames stand out.
        current = details.find_element(By.CSS_SELECTOR, ".current")
        assert current.value_of_css_property("background-color") == "rgba(255, 241, 194, 1)"
        where = details.find_element(By.CSS_SELECTOR, ".frame.in-app .where")
        assert where.value_of_css_property("font-weight") == "600"

    def test_exception_leaving_a_context_is_shown(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """An exception that left a context shows as an unchained exception with its frames."""
        open_view(page, server)
        shop("user_42", uuid7())
        event = stored_exception(server, "user_42", "TimeoutError")
        row = find_row(page, "$exception", "user_42", "TimeoutError: mail server did not answer")
        assert "chained" not in text(row.find_element(By.CSS_SELECTOR, "td.summary"))
        check_exception_details(open_details(page, row), event)

    def test_library_frames_are_not_highlighted(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """Frames from the standard library are shown without the in-app highlight."""
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_9")
            try:
                json.loads("{not json")
            except ValueError:
                app_log.exception("could not read the settings")
        [event] = server.wait_for_events(1, timeout=WAIT, event="$exception")
        frames = event["properties"]["$exception_list"][0]["stacktrace"]["frames"]
        assert {frame["in_app"] for frame in frames} == {True, False}
        details = open_details(page, find_row(page, "$exception", "user_9", "JSONDecodeError"))
        check_exception_details(details, event)
        plain = details.find_elements(By.CSS_SELECTOR, ".frame:not(.in-app)")
        assert len(plain) == sum(not frame["in_app"] for frame in frames)


class TestFilters:
    def test_filters_show_only_matching_rows(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """Typing a person, an event name or a session shows only matching rows; clear
        shows them all again."""
        session_a, session_b = uuid7(), uuid7()
        shop("user_a", session_a)
        shop("user_b", session_b)
        open_view(page, server)
        wait_rows(page, lambda rows: len(rows) == 10, "both visits")

        set_filter(page, "filter-person", "user_a")
        rows = wait_rows(
            page,
            lambda rows: len(rows) == 5 and {r["person"] for r in rows} == {"user_a"},
            "user_a's events only",
        )
        assert names(rows) == SHOP_EVENTS
        clear_filters(page)
        wait_rows(page, lambda rows: len(rows) == 10, "every event after clear")
        assert page.find_element(By.ID, "filter-person").get_property("value") == ""

        set_filter(page, "filter-event", "$exception")
        rows = wait_rows(
            page,
            lambda rows: len(rows) == 4 and set(names(rows)) == {"$exception"},
            "exceptions only",
        )
        assert {row["person"] for row in rows} == {"user_a", "user_b"}
        set_filter(page, "filter-person", "user_b")
        rows = wait_rows(
            page,
            lambda rows: len(rows) == 2 and {r["person"] for r in rows} == {"user_b"},
            "user_b's exceptions",
        )
        assert set(names(rows)) == {"$exception"}
        clear_filters(page)
        wait_rows(page, lambda rows: len(rows) == 10, "every event after clear")

        set_filter(page, "filter-session", session_b)
        rows = wait_rows(
            page,
            lambda rows: len(rows) == 5 and {r["session"] for r in rows} == {session_b},
            "session b only",
        )
        assert {row["person"] for row in rows} == {"user_b"}
        clear_filters(page)
        wait_rows(page, lambda rows: len(rows) == 10, "every event after clear")

    def test_filtered_view_keeps_showing_new_matching_events(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """With a filter set, new matching events appear and others stay hidden."""
        open_view(page, server)
        set_filter(page, "filter-person", "user_b")
        wait_for(page, lambda d: d.find_element(By.ID, "empty").is_displayed(), "no rows")
        shop("user_a", uuid7())
        shop("user_b", uuid7())
        rows = wait_rows(page, lambda rows: len(rows) == 5, "user_b's events")
        assert {row["person"] for row in rows} == {"user_b"}
        assert names(rows) == SHOP_EVENTS

    def test_same_session_link_filters_by_that_session(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """The "same session" link in an event's details shows that session's events only."""
        session_a, session_b = uuid7(), uuid7()
        shop("user_a", session_a)
        shop("user_b", session_b)
        open_view(page, server)
        wait_rows(page, lambda rows: len(rows) == 10, "both visits")

        details = open_details(page, find_row(page, "checkout_completed", "user_a"))
        details.find_element(By.CSS_SELECTOR, "a.session-link").click()
        rows = wait_rows(
            page,
            lambda rows: len(rows) == 5 and {r["session"] for r in rows} == {session_a},
            "session a only",
        )
        assert {row["person"] for row in rows} == {"user_a"}
        assert page.find_element(By.ID, "filter-session").get_property("value") == session_a

    def test_session_link_in_a_row_filters_by_that_session(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """Clicking a row's session link filters by that session without opening details."""
        session_a, session_b = uuid7(), uuid7()
        shop("user_a", session_a)
        shop("user_b", session_b)
        open_view(page, server)
        wait_rows(page, lambda rows: len(rows) == 10, "both visits")

        row = find_row(page, "page_viewed", "user_b")
        link = row.find_element(By.CSS_SELECTOR, "a.session")
        assert link.get_attribute("title") == session_b
        assert link.text == f"{session_b[:13]}…"
        link.click()
        wait_rows(
            page,
            lambda rows: len(rows) == 5 and {r["session"] for r in rows} == {session_b},
            "session b only",
        )
        assert page.find_element(By.ID, "filter-session").get_property("value") == session_b
        assert not page.find_elements(By.CSS_SELECTOR, "tr.details")


class TestUntrustedData:
    def test_markup_in_events_is_shown_as_text(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """Markup in property values, a person or an event name shows as literal text and
        never runs."""
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context(XSS_PERSON)
            posthog_logging.set_context_session(uuid7())
            posthog_logging.tag("note", XSS_SCRIPT)
            app_log.info("comment", extra={"event": XSS_EVENT, "avatar": XSS_IMG})
        [row] = wait_rows(page, lambda rows: len(rows) == 1, "the event")
        assert row["person"] == XSS_PERSON
        assert row["event"] == XSS_EVENT
        assert XSS_SCRIPT in row["summary"]
        assert json.dumps(XSS_IMG) in row["summary"]

        details = open_details(page, find_row(page, XSS_EVENT, XSS_PERSON))
        properties = json.loads(text(details.find_element(By.CSS_SELECTOR, "pre.properties")))
        assert properties["note"] == XSS_SCRIPT
        assert properties["avatar"] == XSS_IMG
        visible = page.find_element(By.ID, "events").text
        for literal in (XSS_PERSON, XSS_SCRIPT, XSS_EVENT, json.dumps(XSS_IMG)):
            assert literal in visible
        table = page.find_element(By.ID, "events")
        for tag in ("img", "script", "b"):
            assert table.find_elements(By.TAG_NAME, tag) == [], f"a <{tag}> element was built"
        assert page.execute_script("return window.__pwned") is None

    def test_policy_blocks_inline_script(self, page: Chrome, server: LocalServer) -> None:
        """Even markup that reached the page could not run inline script: the policy blocks it."""
        open_view(page, server)
        page.execute_script(
            "const s = document.createElement('script');"
            " s.textContent = 'window.__inline = 1'; document.body.append(s);"
        )
        assert page.execute_script("return window.__inline") is None
        policy = requests.get(f"{server.url}/", timeout=WAIT).headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "default-src 'none'" in policy


class TestSelfContained:
    def test_no_external_resource_and_no_console_error(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """The page loads everything from the local server and logs no error in the console."""
        open_view(page, server)
        shop("user_42", uuid7())
        wait_rows(page, lambda rows: len(rows) == 5, "the shop's events")
        open_details(page, find_row(page, "$exception", "user_42", PAYMENT))
        set_filter(page, "filter-event", "$exception")
        wait_rows(page, lambda rows: len(rows) == 2, "exceptions only")

        urls: list[str] = page.execute_script(
            "return performance.getEntriesByType('resource').map((entry) => entry.name)"
            ".concat(performance.getEntriesByType('navigation').map((entry) => entry.name))"
        )
        assert f"{server.url}/view/app.js" in urls
        assert f"{server.url}/view/style.css" in urls
        assert any(url.startswith(f"{server.url}/api/events?") for url in urls)
        outside = [url for url in urls if not url.startswith(f"{server.url}/")]
        assert outside == []
        errors = [entry for entry in console(page) if entry["level"] == "SEVERE"]
        assert errors == []


class TestEventsApi:
    @pytest.fixture
    def logged(self, server: LocalServer, app_log: logging.Logger) -> dict[str, str]:
        """Three events by two people in two sessions; the sessions by person."""
        sessions = {"ann": uuid7(), "bob": uuid7()}
        for person, name in (("ann", "signed_in"), ("bob", "signed_in"), ("ann", "paid")):
            with posthog_logging.new_context():
                posthog_logging.identify_context(person)
                posthog_logging.set_context_session(sessions[person])
                posthog_logging.tag("step", name)
                app_log.info(name, extra={"event": True})
                assert posthog_logging.flush(WAIT)  # one at a time: the order is known
        server.wait_for_events(3, timeout=WAIT)
        return sessions

    @staticmethod
    def get(server: LocalServer, **params: Any) -> list[dict[str, Any]]:
        response = requests.get(f"{server.url}/api/events", params=params, timeout=WAIT)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Cache-Control"] == "no-store"
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def test_feed_lists_events_oldest_first_with_seq(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """The feed returns every event as JSON, oldest first, each with an increasing seq."""
        events = self.get(server)
        assert [(e["event"], e["distinct_id"]) for e in events] == [
            ("signed_in", "ann"),
            ("signed_in", "bob"),
            ("paid", "ann"),
        ]
        seqs = [event["seq"] for event in events]
        assert all(isinstance(seq, int) for seq in seqs)
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        assert events[0]["properties"]["$session_id"] == logged["ann"]
        assert events[0]["properties"]["step"] == "signed_in"
        assert {"uuid", "timestamp", "received_at"} <= events[0].keys()

    def test_after_returns_only_later_events(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """``after`` returns only the events that arrived after that seq; ``limit`` caps them."""
        first, second, third = self.get(server)
        assert self.get(server, after=first["seq"]) == [second, third]
        assert self.get(server, after=third["seq"]) == []
        assert self.get(server, after=first["seq"], limit=1) == [second]
        assert self.get(server, limit=1) == [third]  # without after: the newest ones

    def test_filters_match_name_person_and_session(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """``event``, ``distinct_id`` and ``session_id`` each narrow the feed; empty ones don't."""
        assert [e["distinct_id"] for e in self.get(server, event="signed_in")] == ["ann", "bob"]
        assert [e["event"] for e in self.get(server, distinct_id="ann")] == ["signed_in", "paid"]
        by_session = self.get(server, session_id=logged["bob"])
        assert [(e["event"], e["distinct_id"]) for e in by_session] == [("signed_in", "bob")]
        both = self.get(server, event="paid", distinct_id="ann", session_id=logged["ann"])
        assert [e["event"] for e in both] == ["paid"]
        assert self.get(server, event="paid", distinct_id="bob") == []
        assert len(self.get(server, event="", distinct_id="", session_id="")) == 3

    @pytest.mark.parametrize("params", [{"after": "abc"}, {"after": "1.5"}, {"limit": "ten"}])
    def test_bad_after_or_limit_is_400(self, server: LocalServer, params: dict[str, str]) -> None:
        """A non-integer ``after`` or ``limit`` is answered 400 with a JSON error."""
        response = requests.get(f"{server.url}/api/events", params=params, timeout=WAIT)
        assert response.status_code == 400
        assert response.headers["Content-Type"].startswith("application/json")
        assert "integers" in response.json()["detail"]


class TestScreenshot:
    def test_screenshot_of_a_realistic_page(
        self,
        page: Chrome,
        server: LocalServer,
        shop: Callable[[str, str], None],
        tmp_path: Path,
    ) -> None:
        """Two visits with an exception's details open render to a PNG screenshot (saved to
        $POSTHOG_LOGGING_SCREENSHOT when set)."""
        open_view(page, server)
        shop("user_42", uuid7())
        shop("user_7", uuid7())
        wait_rows(page, lambda rows: len(rows) == 10, "both visits")
        details = open_details(page, find_row(page, "$exception", "user_7", PAYMENT))
        check_exception_details(details, stored_exception(server, "user_7", "PaymentDeclined"))
        page.execute_script("window.scrollTo(0, 0)")
        target = Path(os.environ.get("POSTHOG_LOGGING_SCREENSHOT") or tmp_path / "web-view.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        assert page.save_screenshot(str(target))
        width, height = png_size(target)
        assert width >= 1000 and height >= 600
