"""Tests for the local server's web view (GET /, /view/app.js, /view/style.css, /api/events,
/api/logs).

The page is driven in a real headless Chromium through Selenium. Events and log lines
reach the server the way an application sends them: log records through a
`PostHogHandler` (with ``logs_level`` for the lines of PostHog Logs), inside contexts that
identify the person and the session. The browser is shared by the tests of
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

import posthog_logging
from posthog_logging import Client, PostHogHandler
from posthog_logging.cli.demo import shop_session
from posthog_logging.ids import uuid7
from posthog_logging.server import LocalServer

from .conftest import API_KEY
from .helpers import stored_line, wait_for_lines

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
        missing = f"{_binary} is missing: the web view tests need it"
        if os.environ.get("POSTHOG_LOGGING_REQUIRE_BROWSER"):  # CI: a skip would hide it
            raise RuntimeError(missing)
        pytest.skip(missing, allow_module_level=True)

WAIT = 10.0  # seconds to wait for the page; it polls the server every second
SHOP_EVENTS = ["checkout_completed", "$exception", "$exception", "checkout_started", "page_viewed"]
"""What one `shop_session` shows, newest on top."""
PAYMENT = "PaymentDeclined: could not charge 49.90 EUR"
XSS_SCRIPT = "<script>window.__pwned=1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned=2">'
XSS_PERSON = "<b>bold</b>"
XSS_EVENT = '<img src=x onerror="window.__pwned=3">'
SERVICE = "checkout-api"
"""The service of the test's own client (``line_log``)."""
SHOP_SERVICE = "shop"
SHOP_LINES = [
    ("INFO", "checkout_completed"),
    ("WARNING", "receipt not sent; will retry later"),
    ("ERROR", "payment failed  [posthog_logging.cli.demo.PaymentDeclined]"),
    ("INFO", "checkout started"),
    ("INFO", "cart has 3 items"),
    ("INFO", "page_viewed"),
]
"""The log lines (level, line) one `shop_session` shows, newest on top."""
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
"""How the log table prints a line's time (UTC, to the millisecond)."""

# One object per row of the table, read in one go so that a re-render cannot stale it.
ROWS_JS = """
return Array.from(document.querySelectorAll('#event-rows tr.event'), (row) => {
  const link = row.cells[3].querySelector('a');
  return {time: row.cells[0].textContent, event: row.cells[1].textContent,
          person: row.cells[2].textContent, session: link ? link.title : '',
          summary: row.cells[4].textContent};
});
"""
LINES_JS = """
return Array.from(document.querySelectorAll('#log-rows tr.line'), (row) => {
  const link = row.cells[4].querySelector('a');
  return {time: row.cells[0].textContent, level: row.cells[1].textContent,
          service: row.cells[2].textContent, person: row.cells[3].textContent,
          session: link ? link.title : '', line: row.cells[5].textContent};
});
"""
# Both tables from one call: a poll renders both at once, so they always agree.
TABLES_JS = f"return [(() => {{{ROWS_JS}}})(), (() => {{{LINES_JS}}})()];"
FIND_LINE_JS = """
return Array.from(document.querySelectorAll('#log-rows tr.line')).find(
  (row) => row.cells[5].textContent.startsWith(arguments[0])
    && (arguments[1] === null || row.cells[3].textContent === arguments[1])) || null;
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
def line_client(make_client: Callable[..., Client]) -> Client:
    """The test's own client, sending to ``server`` as the service ``checkout-api``."""
    return make_client(service_name=SERVICE)


@pytest.fixture
def line_log(line_client: Client, attach: Callable[..., logging.Logger]) -> logging.Logger:
    """An application logger whose records at INFO and above also go to ``server`` as log
    lines (``logs_level="INFO"``), from the service ``checkout-api``."""
    return attach(PostHogHandler(client=line_client, logs_level="INFO"))


@pytest.fixture
def shop(
    default_client: Client, attach: Callable[..., logging.Logger], server: LocalServer
) -> Iterator[Callable[[str, str], None]]:
    """Run the demo's `shop_session` with its logger sending to ``server``, its records at
    INFO and above as log lines and exception steps too, exceptions with their locals, as
    the demo sets it up; wait for its five events and six lines to be stored.

    The default client is configured again, as the service ``shop``: everything goes
    through one client (so the events arrive in the order they were logged)."""
    demo_log = logging.getLogger("demo.shop")
    propagate, level = demo_log.propagate, demo_log.level
    shop_client = posthog_logging.configure(
        api_key=default_client.api_key,
        host=server.url,
        flush_interval=default_client.flush_interval,
        service_name=SHOP_SERVICE,
        capture_exception_code_variables=True,
    )  # shut down when default_client's fixture ends
    handler = PostHogHandler(client=shop_client, logs_level="INFO", exception_steps_level="INFO")
    attach(handler, name="demo.shop")

    def visit(user: str, session: str) -> None:
        events, lines = server.store.count(), len(server.store.logs())
        shop_session(user, session)
        assert shop_client.flush(WAIT)
        server.wait_for_events(events + len(SHOP_EVENTS), timeout=WAIT)
        wait_for_lines(server, lines + len(SHOP_LINES))

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
        events, lines = driver.execute_script(TABLES_JS)
        raise AssertionError(
            f"timed out after {WAIT:g}s waiting for {what}; the page shows the events"
            f" {events} and the log lines {lines}"
        ) from None


def shown(driver: Chrome) -> list[dict[str, str]]:
    """The rows of the table, top to bottom."""
    rows: list[dict[str, str]] = driver.execute_script(ROWS_JS)
    return rows


def wait_rows(
    driver: Chrome, condition: Callable[[list[dict[str, str]]], bool], what: str
) -> list[dict[str, str]]:
    """Wait until the rows shown satisfy ``condition`` and return them."""
    return wait_shown(driver, shown, condition, what)


def wait_shown(
    driver: Chrome,
    read: Callable[[Chrome], list[dict[str, str]]],
    condition: Callable[[list[dict[str, str]]], bool],
    what: str,
) -> list[dict[str, str]]:
    """Wait until what ``read`` finds on the page satisfies ``condition``; return it."""
    found: list[dict[str, str]] = wait_for(
        driver, lambda d: (rows := read(d)) and condition(rows) and rows, what
    )
    return found


def shown_lines(driver: Chrome) -> list[dict[str, str]]:
    """The rows of the log table, top to bottom."""
    lines: list[dict[str, str]] = driver.execute_script(LINES_JS)
    return lines


def wait_lines(
    driver: Chrome, condition: Callable[[list[dict[str, str]]], bool], what: str
) -> list[dict[str, str]]:
    """Wait until the log lines shown satisfy ``condition`` and return them."""
    return wait_shown(driver, shown_lines, condition, what)


Tables = tuple[list[dict[str, str]], list[dict[str, str]]]


def wait_tables(driver: Chrome, condition: Callable[[Tables], bool], what: str) -> Tables:
    """Wait until the events and the log lines shown, read together, satisfy
    ``condition``; return them."""

    def both(d: Chrome) -> Tables | None:
        events, lines = d.execute_script(TABLES_JS)
        return (events, lines) if condition((events, lines)) else None

    found: Tables = wait_for(driver, both, what)
    return found


def console(driver: Chrome) -> list[dict[str, Any]]:
    """What the page logged to the browser console since the last call."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def names(rows: list[dict[str, str]]) -> list[str]:
    return [row["event"] for row in rows]


def levels_and_lines(lines: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(line["level"], line["line"]) for line in lines]


def of(rows: list[dict[str, str]], key: str) -> set[str]:
    """The values of ``key`` across ``rows``."""
    return {row[key] for row in rows}


def find_row(driver: Chrome, event: str, person: str, summary: str = "") -> WebElement:
    """The row of ``event`` by ``person`` whose summary starts with ``summary``."""
    row: WebElement = wait_for(
        driver,
        lambda d: d.execute_script(FIND_ROW_JS, event, person, summary),
        f"a row {event!r} by {person!r}",
    )
    return row


def find_line(driver: Chrome, line: str, person: str | None = None) -> WebElement:
    """The log table's row whose line starts with ``line`` (by ``person``, if given)."""
    row: WebElement = wait_for(
        driver,
        lambda d: d.execute_script(FIND_LINE_JS, line, person),
        f"a log line {line!r}" + (f" by {person!r}" if person is not None else ""),
    )
    return row


def open_details(driver: Chrome, row: WebElement, cell: str = "td.name") -> WebElement:
    """Click a row (on ``cell``, by default its event name: away from the session link)
    and return its details."""
    row.find_element(By.CSS_SELECTOR, cell).click()
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


def open_line_details(driver: Chrome, row: WebElement) -> WebElement:
    """Click a log line's row (on its line) and return its details."""
    return open_details(driver, row, "td.summary")


def line_time(shown_time: str) -> float:
    """A time as the log table prints it, as epoch seconds."""
    parsed = datetime.strptime(shown_time, "%Y-%m-%d %H:%M:%S.%f")
    return parsed.replace(tzinfo=timezone.utc).timestamp()


def json_in(details: WebElement, selector: str) -> Any:
    """The JSON the details show in ``selector``."""
    return json.loads(text(details.find_element(By.CSS_SELECTOR, selector)))


def text(element: WebElement) -> str:
    """The element's exact text (``.text`` would collapse white space)."""
    return str(element.get_property("textContent"))


def classes(element: WebElement) -> set[str]:
    return set(str(element.get_property("className")).split())


def set_filter(driver: Chrome, field: str, value: str) -> None:
    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(value)


def store_events(server: LocalServer, count: int) -> None:
    """Send ``count`` events in one batch, as a client's flush does: ``step_0`` to
    ``step_{count - 1}`` in that order, by ``ann`` (the first hundred) then ``bob``, every
    fifth in the session ``s-5``."""
    events = [
        {
            "event": f"step_{i}",
            "distinct_id": "ann" if i < 100 else "bob",
            "properties": {"n": i, **({"$session_id": "s-5"} if i % 5 == 0 else {})},
            "timestamp": datetime.now(timezone.utc).isoformat(),
            "uuid": uuid7(),
        }
        for i in range(count)
    ]
    body = {"api_key": API_KEY, "batch": events}
    response = requests.post(f"{server.url}/batch/", json=body, timeout=WAIT)
    assert response.status_code == 200, response.text
    assert server.store.count() == count


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
    """The details show how the exception was caught (level and source), every exception
    of ``event`` with how it was caught or what it is chained to, its frames with their
    source context and local variables, then the other properties as JSON."""
    properties = event["properties"]
    how = [
        properties[key] for key in ("$exception_level", "$exception_source") if key in properties
    ]
    assert [text(line) for line in details.find_elements(By.CSS_SELECTOR, ".exc-level")] == (
        [" · ".join(how)] if how else []
    )
    entries = properties["$exception_list"]
    sections = details.find_elements(By.CSS_SELECTOR, "section.exc")
    assert len(sections) == len(entries)
    for section, entry in zip(sections, entries, strict=True):
        heading = section.find_element(By.TAG_NAME, "h3")
        assert text(heading) == f"{entry['type']}: {entry['value']}"
        mechanism = text(section.find_element(By.CSS_SELECTOR, ".mechanism"))
        assert mechanism == mechanism_text(entry["mechanism"])
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
            expected_variables = [
                (name, variable_text(value))
                for name, value in frame.get("code_variables", {}).items()
            ]
            assert variables(box) == expected_variables
    shown = details.find_element(By.CSS_SELECTOR, "pre.properties")
    hidden = {"$exception_list", "$exception_steps"}  # shown above, not twice
    expected = {k: v for k, v in properties.items() if k not in hidden}
    assert json.loads(text(shown)) == expected
    assert f"uuid {event['uuid']}" in text(details)


def delivered_exception(client: Client, server: LocalServer) -> dict[str, Any]:
    """Flush ``client`` and return the one ``$exception`` the server stored."""
    assert client.flush(WAIT)
    [event] = server.wait_for_events(1, timeout=WAIT, event="$exception")
    return event


def mechanism_text(mechanism: dict[str, Any]) -> str:
    """How the details print an exception's mechanism: how the first one was caught, what
    a chained one hangs off."""
    if mechanism["type"] == "chained":
        shown = f"chained ({mechanism['source']}) of #{mechanism['parent_id']}"
    else:
        shown = f"mechanism: {mechanism['type']}"
        if "handled" in mechanism:
            shown += f" · handled: {json.dumps(mechanism['handled'])}"
    if mechanism.get("synthetic"):
        shown += " · synthetic"
    if mechanism.get("is_exception_group"):
        shown += " · exception group"
    return shown


REDACTED = "$$_posthog_redacted_based_on_masking_rules_$$"
"""What ``code_variables`` holds for a value hidden by the masking rules."""
MASKED_TEXT = {REDACTED: "[masked]", "$$_posthog_value_too_long_$$": "[too long]"}
"""How a frame's variables table shows a value that was not sent."""


def variable_text(value: Any) -> str:
    """How a frame's variables table shows a value of ``code_variables``."""
    if isinstance(value, str):
        return MASKED_TEXT.get(value, value)
    return json.dumps(value)


def variables(frame: WebElement) -> list[tuple[str, str]]:
    """The (name, value) rows of a frame's variables table, top to bottom; none without one."""
    tables = frame.find_elements(By.CSS_SELECTOR, "table.vars")
    if not tables:
        return []
    [table] = tables
    return [
        (
            text(row.find_element(By.CSS_SELECTOR, "td.var-name")),
            text(row.find_element(By.CSS_SELECTOR, "td.var-value")),
        )
        for row in table.find_elements(By.TAG_NAME, "tr")
    ]


class CouponExpired(Exception):
    """An application's own exception, for a logged exception's line."""


COUPON_EXPIRED = f"{__name__}.CouponExpired"
"""How a line names it: ``exception.type``, with its module."""


def apply_coupon(code: str) -> None:
    raise CouponExpired(f"coupon {code} expired yesterday")


def reserve_seats(seats: int) -> None:
    """Fails with two locals of its own: a count and a secret-looking one."""
    count = 3
    password = "x"
    if password and seats > count:
        raise OverflowError(f"only {count} seats left, {seats} asked")


def save_comment(body: str) -> None:
    comment = body.strip()
    raise ValueError(f"comment of {len(comment)} characters rejected")


def step_rows(details: WebElement) -> list[dict[str, str]]:
    """The steps the details list, top to bottom: each one's columns by name."""
    rows: list[dict[str, str]] = details.parent.execute_script(
        """
        return Array.from(arguments[0].querySelectorAll('section.steps li'), (item) => {
          const part = (name) => {
            const found = item.querySelector('.step-' + name);
            return found ? found.textContent : null;
          };
          return {time: part('time'), level: part('level'), logger: part('logger'),
                  message: part('message'), props: part('props'), classes: item.className};
        });
        """,
        details,
    )
    return rows


def step_time(timestamp: str) -> str:
    """How the steps list prints a step's ``$timestamp``: its UTC time of day, to the
    millisecond."""
    moment = datetime.fromisoformat(timestamp).astimezone(timezone.utc)
    return moment.strftime("%H:%M:%S.%f")[:-3]


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


class TestLogLines:
    def test_log_lines_appear_without_reloading(
        self, page: Chrome, server: LocalServer, line_log: logging.Logger
    ) -> None:
        """Log lines sent after the page is open appear in the log table, newest on top, with
        time, level, service, person, session and line, and no reload; a record below
        ``logs_level`` sends none."""
        open_view(page, server)
        assert page.find_element(By.ID, "logs-empty").is_displayed()
        assert shown_lines(page) == []
        page.execute_script("window.__sameDocument = true")
        session = uuid7()

        with posthog_logging.new_context():
            posthog_logging.identify_context("user_1")
            posthog_logging.set_context_session(session)
            posthog_logging.tag("plan", "pro")
            line_log.debug("cache warmed in %d ms", 12)  # below logs_level: no line
            line_log.info("signed in with %s", "password", extra={"method": "password"})
        [line] = wait_lines(page, lambda lines: len(lines) == 1, "the first log line")
        assert line == {
            "time": line["time"],
            "level": "INFO",
            "service": SERVICE,
            "person": "user_1",
            "session": session,
            "line": "signed in with password",
        }
        assert re.fullmatch(TIME, line["time"])
        stored = stored_line(server, "signed in with password")
        assert line_time(line["time"]) == pytest.approx(stored["time_unix_nano"] / 1e9, abs=0.002)
        assert not page.find_element(By.ID, "logs-empty").is_displayed()

        line_log.warning("disk %d%% full", 91)  # outside any context: no person, no session
        lines = wait_lines(page, lambda lines: len(lines) == 2, "the second log line")
        assert levels_and_lines(lines) == [
            ("WARNING", "disk 91% full"),
            ("INFO", "signed in with password"),
        ]
        assert (lines[0]["person"], lines[0]["session"]) == ("", "")
        assert "sev-warn" in classes(find_line(page, "disk 91% full"))
        assert [line["body"] for line in server.store.logs()] == [
            "signed in with password",
            "disk 91% full",
        ]  # the DEBUG record never became a line
        assert page.execute_script("return window.__sameDocument") is True
        assert "0 events, 2 log lines shown" in page.find_element(By.ID, "status").text
        assert shown(page) == []  # ordinary log records are no events

    def test_loguru_events_exceptions_and_lines_show_like_the_others(
        self, page: Chrome, server: LocalServer, line_client: Client
    ) -> None:
        """What loguru's ``PostHogSink`` sends shows as the standard library's does: the
        marked record as an event, ``logger.exception`` as an exception with its frames,
        and the lines in the log table with their level, person and session."""
        from loguru import logger

        from posthog_logging.loguru import PostHogSink

        open_view(page, server)
        session = uuid7()
        logger.remove()
        sink_id = logger.add(PostHogSink(line_client, logs_level="INFO"), level="INFO")
        try:
            with posthog_logging.new_context():
                posthog_logging.identify_context("user_lg")
                posthog_logging.set_context_session(session)
                logger.info("page_viewed", event=True, page="/loguru")
                logger.success("cart has {} items", 3)
                try:
                    raise ValueError("card declined")
                except ValueError:
                    logger.exception("payment failed")
        finally:
            logger.remove(sink_id)
        assert line_client.flush(WAIT)
        row = find_row(page, "page_viewed", "user_lg", 'page="/loguru"')
        assert text(row.find_element(By.CSS_SELECTOR, "td.summary")) == 'page="/loguru"'
        details = open_details(page, find_row(page, "$exception", "user_lg", "ValueError"))
        [section] = details.find_elements(By.CSS_SELECTOR, "section.exc")
        assert text(section.find_element(By.TAG_NAME, "h3")) == "ValueError: card declined"
        assert section.find_elements(By.CSS_SELECTOR, ".frame")
        assert text(details.find_element(By.CSS_SELECTOR, ".exc-level")) == (
            "error · python.loguru"
        )
        lines = wait_lines(page, lambda lines: len(lines) == 3, "the three loguru lines")
        assert levels_and_lines(lines)[1] == ("SUCCESS", "cart has 3 items")
        assert {(line["person"], line["session"]) for line in lines} == {("user_lg", session)}

    def test_exception_line_shows_its_stack_trace_and_attributes(
        self, page: Chrome, server: LocalServer, line_log: logging.Logger
    ) -> None:
        """A logged exception's line names the exception type; a click opens its stack trace
        (as Python prints it), its attributes and its resource as JSON; a second click
        closes it."""
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_9")
            posthog_logging.set_context_session(uuid7())
            try:
                apply_coupon("SPRING")
            except CouponExpired:
                line_log.exception("could not apply coupon %s", "SPRING", extra={"cart": "c_17"})
        row = find_line(page, "could not apply coupon SPRING", "user_9")
        assert text(row.find_element(By.CSS_SELECTOR, "td.summary")) == (
            f"could not apply coupon SPRING  [{COUPON_EXPIRED}]"
        )
        assert text(row.find_element(By.CSS_SELECTOR, "td.level")) == "ERROR"
        assert "sev-error" in classes(row)
        stored = stored_line(server, "could not apply coupon SPRING")

        details = open_line_details(page, row)
        stack = text(details.find_element(By.CSS_SELECTOR, "pre.stacktrace"))
        assert stack == stored["attributes"]["exception.stacktrace"]
        assert stack.startswith("Traceback (most recent call last):\n")
        assert re.search(r'File "[^"]*test_view\.py", line \d+, in apply_coupon\n', stack)
        assert '    raise CouponExpired(f"coupon {code} expired yesterday")\n' in stack
        assert stack.endswith(f"{COUPON_EXPIRED}: coupon SPRING expired yesterday\n")
        attributes = json_in(details, "pre.properties:not(.resource)")
        assert "exception.stacktrace" not in attributes  # shown above, not twice
        assert attributes == {
            k: v for k, v in stored["attributes"].items() if k != "exception.stacktrace"
        }
        assert attributes["cart"] == "c_17"
        assert attributes["posthogDistinctId"] == "user_9"
        assert attributes["exception.type"] == COUPON_EXPIRED
        assert attributes["exception.message"] == "coupon SPRING expired yesterday"
        assert (
            attributes["code.function"]
            == "test_exception_line_shows_its_stack_trace_and_attributes"
        )
        resource = json_in(details, "pre.properties.resource")
        assert resource == stored["resource"]
        assert resource["service.name"] == SERVICE
        assert "· span" not in text(details)  # no span was active: no trace ids

        row.find_element(By.CSS_SELECTOR, "td.summary").click()
        wait_for(
            page,
            lambda d: not d.find_elements(By.CSS_SELECTOR, "#log-rows tr.details"),
            "the line's details closed",
        )

    def test_line_logged_in_a_span_shows_its_trace_and_span(
        self, page: Chrome, server: LocalServer, line_log: logging.Logger
    ) -> None:
        """A line logged inside an OpenTelemetry span shows the trace and span ids in its
        details."""
        trace = pytest.importorskip("opentelemetry.trace")
        span = trace.SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
        )
        open_view(page, server)
        with trace.use_span(trace.NonRecordingSpan(span), end_on_exit=False):
            line_log.info("inside the span")
        details = open_line_details(page, find_line(page, "inside the span"))
        ids = details.find_element(By.CSS_SELECTOR, "div.mono")
        assert text(ids) == "trace 0af7651916cd43dd8448eb211c80319c · span 00f067aa0ba902b7"


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

    def test_local_variables_are_shown_under_their_frame(
        self,
        page: Chrome,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """With ``capture_exception_code_variables``, each frame of the application shows
        the values its local variables held, under its source: numbers as they are, and a
        secret-looking one masked, in its own style."""
        client = make_client(capture_exception_code_variables=True)
        log = attach(PostHogHandler(client=client))
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_4")
            try:
                reserve_seats(5)
            except OverflowError:
                log.exception("could not reserve the seats")
        event = delivered_exception(client, server)
        row = find_row(page, "$exception", "user_4", "OverflowError: only 3 seats left, 5 asked")
        details = open_details(page, row)
        check_exception_details(details, event)
        frame = next(
            box
            for box in details.find_elements(By.CSS_SELECTOR, ".frame")
            if text(box.find_element(By.CSS_SELECTOR, ".where")).startswith("reserve_seats  ")
        )
        assert dict(variables(frame)) == {"seats": "5", "count": "3", "password": "[masked]"}
        [masked] = frame.find_elements(By.CSS_SELECTOR, "td.masked")
        assert text(masked) == "[masked]"
        assert masked.get_attribute("title") == REDACTED
        assert masked.value_of_css_property("font-style") == "italic"
        plain = frame.find_element(By.CSS_SELECTOR, "td.var-value:not(.masked)")
        assert plain.value_of_css_property("font-style") == "normal"
        # The table comes after the frame's source, inside the frame.
        parts = frame.find_elements(By.CSS_SELECTOR, ".where, pre.code, table.vars")
        assert [part.tag_name for part in parts] == ["div", "pre", "table"]

    def test_steps_before_the_error_are_listed_oldest_first(
        self,
        page: Chrome,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """With ``exception_steps_level``, the lines logged in the context before an error
        are listed in its details, oldest first, with time, level, logger, message and
        their other properties, above the properties (which no longer repeat them)."""
        client = make_client()
        log = attach(PostHogHandler(client=client, exception_steps_level="INFO"))
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_5")
            log.debug("cache warmed")  # below the steps' level: not a step
            log.info("cart has %d items", 3)
            log.info("coupon entered", extra={"coupon": "SPRING", "discount": 0.1})
            log.warning("stock low for %s", "sku_9")
            try:
                apply_coupon("SPRING")
            except CouponExpired:
                log.exception("checkout failed")
        event = delivered_exception(client, server)
        stored = event["properties"]["$exception_steps"]
        details = open_details(page, find_row(page, "$exception", "user_5", "CouponExpired"))
        check_exception_details(details, event)
        assert text(details.find_element(By.CSS_SELECTOR, "section.steps h4")) == (
            "Steps before the error"
        )
        steps = step_rows(details)
        assert [(step["level"], step["message"], step["props"]) for step in steps] == [
            ("info", "cart has 3 items", None),
            ("info", "coupon entered", 'coupon="SPRING", discount=0.1'),  # by name
            ("warning", "stock low for sku_9", None),
        ]
        assert [step["time"] for step in steps] == [step_time(s["$timestamp"]) for s in stored]
        assert {step["logger"] for step in steps} == {log.name}
        assert [step["classes"] for step in steps] == ["step", "step", "step sev-warn"]
        order = details.find_elements(By.CSS_SELECTOR, "section.exc, section.steps, pre.properties")
        assert [part.get_attribute("class") for part in order] == ["exc", "steps", "properties"]
        assert "· span" not in text(details)  # no span was active: no trace ids

    def test_error_logged_without_an_exception_shows_where_it_was_logged(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """An error logged without an exception shows as a synthetic one: its message in
        the table ("(logged error)"), its message template and message as the heading,
        marked synthetic, and the logging call as its one frame."""
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_3")
            app_log.error("payment failed for order %s", 7)
        [event] = server.wait_for_events(1, timeout=WAIT, event="$exception")
        heading = "payment failed for order %s: payment failed for order 7"
        summary = "payment failed for order 7  (logged error)"
        row = find_row(page, "$exception", "user_3", summary)
        assert text(row.find_element(By.CSS_SELECTOR, "td.summary")) == summary
        details = open_details(page, row)
        check_exception_details(details, event)
        [section] = details.find_elements(By.CSS_SELECTOR, "section.exc")
        assert text(section.find_element(By.TAG_NAME, "h3")) == heading
        assert text(section.find_element(By.CSS_SELECTOR, ".mechanism")) == (
            "mechanism: logger · handled: true · synthetic"
        )
        [frame] = section.find_elements(By.CSS_SELECTOR, ".frame")
        where = text(frame.find_element(By.CSS_SELECTOR, ".where"))
        function = "test_error_logged_without_an_exception_shows_where_it_was_logged"
        assert re.fullmatch(rf"{function}  \S*test_view\.py:\d+", where)
        current = text(frame.find_element(By.CSS_SELECTOR, ".current"))
        assert current == '            app_log.error("payment failed for order %s", 7)\n'
        assert text(details.find_element(By.CSS_SELECTOR, ".exc-level")) == "error · python.logging"
        properties = json_in(details, "pre.properties")
        assert properties["$exception_fingerprint"] == event["properties"]["$exception_fingerprint"]

    def test_level_source_and_trace_are_shown(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """An exception's details say its level and what caught it ("fatal ·
        python.logging" for a critical record, in red) and, logged inside an OpenTelemetry
        span, that span's trace and span ids."""
        sdk = pytest.importorskip("opentelemetry.sdk.trace")
        tracer = sdk.TracerProvider().get_tracer("checkout")
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_8")
            with tracer.start_as_current_span("charge") as span:
                try:
                    apply_coupon("WINTER")
                except CouponExpired:
                    app_log.critical("checkout crashed", exc_info=True)
        ids = span.get_span_context()
        [event] = server.wait_for_events(1, timeout=WAIT, event="$exception")
        details = open_details(page, find_row(page, "$exception", "user_8", "CouponExpired"))
        check_exception_details(details, event)
        level = details.find_element(By.CSS_SELECTOR, ".exc-level")
        assert text(level) == "fatal · python.logging"
        assert level.value_of_css_property("color") == "rgba(180, 35, 24, 1)"
        first = details.find_element(By.CSS_SELECTOR, "section.exc")
        assert details.parent.execute_script(
            "return arguments[0].nextElementSibling === arguments[1]", level, first
        ), "the level and source are not right above the exception"
        trace = details.find_element(By.CSS_SELECTOR, "div.mono.trace")
        assert text(trace) == f"trace {ids.trace_id:032x} · span {ids.span_id:016x}"
        assert (event["properties"]["$trace_id"], event["properties"]["$span_id"]) == (
            f"{ids.trace_id:032x}",
            f"{ids.span_id:016x}",
        )


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

    def test_person_and_session_filters_narrow_the_log_table_too(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """The person and session filters narrow the log lines as they narrow the events;
        the event name filters events only and leaves every line shown."""
        session_a, session_b = uuid7(), uuid7()
        shop("user_a", session_a)
        shop("user_b", session_b)
        open_view(page, server)
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (10, 12), "both visits")

        set_filter(page, "filter-person", "user_a")
        events, lines = wait_tables(
            page,
            lambda t: of(t[0], "person") == of(t[1], "person") == {"user_a"},
            "user_a's events and lines only",
        )
        assert names(events) == SHOP_EVENTS
        assert levels_and_lines(lines) == SHOP_LINES
        assert of(lines, "service") == {SHOP_SERVICE}
        clear_filters(page)
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (10, 12), "everything after clear")

        set_filter(page, "filter-event", "$exception")
        events, lines = wait_tables(
            page, lambda t: set(names(t[0])) == {"$exception"}, "exceptions only"
        )
        assert len(events) == 4
        assert len(lines) == 12  # the event name does not apply to lines
        set_filter(page, "filter-person", "user_b")
        events, lines = wait_tables(
            page,
            lambda t: of(t[0], "person") == of(t[1], "person") == {"user_b"},
            "user_b's exceptions and every line of user_b",
        )
        assert set(names(events)) == {"$exception"} and len(events) == 2
        assert levels_and_lines(lines) == SHOP_LINES
        clear_filters(page)
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (10, 12), "everything after clear")

        set_filter(page, "filter-session", session_b)
        events, lines = wait_tables(
            page,
            lambda t: of(t[0], "session") == of(t[1], "session") == {session_b},
            "session b only",
        )
        assert names(events) == SHOP_EVENTS
        assert levels_and_lines(lines) == SHOP_LINES
        assert of(lines, "person") == {"user_b"}
        assert "5 events, 6 log lines shown" in page.find_element(By.ID, "status").text

    def test_filtered_log_table_keeps_showing_new_matching_lines(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """With a person filter set, that person's new lines appear and others stay hidden."""
        open_view(page, server)
        set_filter(page, "filter-person", "user_b")
        wait_for(page, lambda d: d.find_element(By.ID, "logs-empty").is_displayed(), "no lines")
        shop("user_a", uuid7())
        shop("user_b", uuid7())
        lines = wait_lines(page, lambda lines: len(lines) == 6, "user_b's lines")
        assert of(lines, "person") == {"user_b"}
        assert levels_and_lines(lines) == SHOP_LINES
        assert not page.find_element(By.ID, "logs-empty").is_displayed()

    def test_session_link_in_a_log_line_filters_both_tables(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """Clicking a log line's session link shows that session's events and lines only,
        without opening the line's details."""
        session_a, session_b = uuid7(), uuid7()
        shop("user_a", session_a)
        shop("user_b", session_b)
        open_view(page, server)
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (10, 12), "both visits")

        link = find_line(page, "cart has 3 items", "user_b").find_element(
            By.CSS_SELECTOR, "a.session"
        )
        assert link.get_attribute("title") == session_b
        assert link.text == f"{session_b[:13]}…"
        link.click()
        events, lines = wait_tables(
            page,
            lambda t: of(t[0], "session") == of(t[1], "session") == {session_b},
            "session b only",
        )
        assert names(events) == SHOP_EVENTS
        assert levels_and_lines(lines) == SHOP_LINES
        assert page.find_element(By.ID, "filter-session").get_property("value") == session_b
        assert not page.find_elements(By.CSS_SELECTOR, "tr.details")

    def test_same_session_link_shows_the_sessions_log_lines_too(
        self, page: Chrome, server: LocalServer, shop: Callable[[str, str], None]
    ) -> None:
        """An event's "same session" link shows that session's events, exceptions and log
        lines, and nothing of another session."""
        session_a, session_b = uuid7(), uuid7()
        shop("user_a", session_a)
        shop("user_b", session_b)
        open_view(page, server)
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (10, 12), "both visits")

        details = open_details(page, find_row(page, "checkout_completed", "user_a"))
        link = details.find_element(By.CSS_SELECTOR, "a.session-link")
        assert link.text == "show this session's events, exceptions and log lines"
        link.click()
        events, lines = wait_tables(
            page,
            lambda t: of(t[0], "session") == of(t[1], "session") == {session_a},
            "session a only",
        )
        assert names(events) == SHOP_EVENTS  # the two exceptions included
        assert levels_and_lines(lines) == SHOP_LINES
        assert of(events, "person") == of(lines, "person") == {"user_a"}
        assert page.find_element(By.ID, "filter-session").get_property("value") == session_a


class TestManyRows:
    def test_newest_page_then_show_older_then_live_rows(
        self, page: Chrome, server: LocalServer, app_log: logging.Logger
    ) -> None:
        """With 250 events stored the page shows the newest 200 and says "200 of 250
        events shown"; "show older" adds the other 50 under them without reloading and goes
        away; an event logged afterwards still appears on top."""
        store_events(server, 250)
        open_view(page, server)
        page.execute_script("window.__sameDocument = true")
        rows = wait_rows(page, lambda rows: len(rows) == 200, "the newest 200 events")
        assert names(rows) == [f"step_{i}" for i in range(249, 49, -1)]
        count = page.find_element(By.ID, "events-count")
        assert count.text == "200 of 250 events shown"
        assert "200 of 250 events, 0 log lines shown" in page.find_element(By.ID, "status").text
        older = page.find_element(By.ID, "events-older")
        assert older.is_displayed() and older.text == "show older"
        assert not page.find_element(By.ID, "logs-older").is_displayed()

        older.click()
        rows = wait_rows(page, lambda rows: len(rows) == 250, "the 50 older events")
        assert names(rows) == [f"step_{i}" for i in range(249, -1, -1)]
        wait_for(page, lambda d: not older.is_displayed(), "the button to go away")
        assert count.text == ""
        assert "250 events, 0 log lines shown" in page.find_element(By.ID, "status").text

        with posthog_logging.new_context():
            posthog_logging.identify_context("carol")
            app_log.info("signed_in", extra={"event": True})
        rows = wait_rows(page, lambda rows: len(rows) == 251, "an event logged afterwards")
        assert (rows[0]["event"], rows[0]["person"]) == ("signed_in", "carol")
        assert names(rows[1:]) == [f"step_{i}" for i in range(249, -1, -1)]
        assert not older.is_displayed()
        assert page.execute_script("return window.__sameDocument") is True

    def test_show_older_keeps_the_filters(self, page: Chrome, server: LocalServer) -> None:
        """Filtered to a person with more than a page of events, the page counts only theirs
        and "show older" adds only theirs."""
        store_events(server, 450)  # ann: step_0 to step_99, bob: step_100 to step_449
        open_view(page, server)
        set_filter(page, "filter-person", "bob")
        rows = wait_rows(
            page, lambda rows: len(rows) == 200 and of(rows, "person") == {"bob"}, "bob's newest"
        )
        wait_for(
            page,
            lambda d: d.find_element(By.ID, "events-count").text == "200 of 350 events shown",
            "bob's count",
        )
        page.find_element(By.ID, "events-older").click()
        rows = wait_rows(page, lambda rows: len(rows) == 350, "bob's older events")
        assert names(rows) == [f"step_{i}" for i in range(449, 99, -1)]
        assert of(rows, "person") == {"bob"}
        wait_for(
            page, lambda d: not d.find_element(By.ID, "events-older").is_displayed(), "no button"
        )

    def test_log_lines_are_in_view_without_scrolling_past_the_events(
        self,
        page: Chrome,
        server: LocalServer,
        line_client: Client,
        line_log: logging.Logger,
    ) -> None:
        """With 250 events stored, the log table's lines are on screen as the page opens:
        the events scroll in their own panel, not the page."""
        store_events(server, 250)
        for body in ("cart loaded", "payment sent", "receipt mailed"):
            line_log.info(body)
        assert line_client.flush(WAIT)
        wait_for_lines(server, 3)
        open_view(page, server)
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (200, 3), "events and lines")
        assert page.execute_script("return window.scrollY") == 0
        height = page.execute_script("return window.innerHeight")
        for body in ("receipt mailed", "payment sent", "cart loaded"):
            row = find_line(page, body)
            assert row.is_displayed()
            top, bottom = page.execute_script(
                "const r = arguments[0].getBoundingClientRect(); return [r.top, r.bottom];", row
            )
            assert 0 <= top < bottom <= height, f"{body!r} is off screen ({top}-{bottom})"
        panel_scrolls = "const p = document.getElementById('events-panel');"
        panel_scrolls += " return p.scrollHeight > p.clientHeight;"
        assert page.execute_script(panel_scrolls) is True

    def test_filters_button_says_what_it_clears(self, page: Chrome, server: LocalServer) -> None:
        """The button next to the filters reads "clear filters"; the page points to
        ``posthog-logging clear`` for emptying the store, and clearing the filters keeps
        the stored events."""
        store_events(server, 3)
        open_view(page, server)
        button = page.find_element(By.ID, "clear-filters")
        assert button.text == "clear filters"
        assert "posthog-logging clear" in page.find_element(By.TAG_NAME, "footer").text
        set_filter(page, "filter-person", "nobody")
        wait_for(page, lambda d: d.find_element(By.ID, "empty").is_displayed(), "no rows")
        clear_filters(page)
        wait_rows(page, lambda rows: len(rows) == 3, "the events again")
        assert server.store.count() == 3


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

    def test_markup_in_log_lines_is_shown_as_text(
        self, page: Chrome, server: LocalServer, line_log: logging.Logger
    ) -> None:
        """Markup in a line's body, its attributes, its person and an exception's message
        shows as literal text, in the table and in the opened details, and never runs."""
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context(XSS_PERSON)
            posthog_logging.set_context_session(uuid7())
            posthog_logging.tag("note", XSS_SCRIPT)
            line_log.info("comment: %s", XSS_SCRIPT, extra={"avatar": XSS_IMG})
            try:
                raise ValueError(XSS_IMG)
            except ValueError:
                line_log.exception("rejected %s", XSS_IMG)
        lines = wait_lines(page, lambda lines: len(lines) == 2, "both lines")
        assert [line["line"] for line in lines] == [
            f"rejected {XSS_IMG}  [ValueError]",
            f"comment: {XSS_SCRIPT}",
        ]
        assert of(lines, "person") == {XSS_PERSON}

        comment = open_line_details(page, find_line(page, "comment: "))
        attributes = json_in(comment, "pre.properties:not(.resource)")
        assert attributes["avatar"] == XSS_IMG
        assert attributes["note"] == XSS_SCRIPT
        assert attributes["posthogDistinctId"] == XSS_PERSON
        rejected = open_line_details(page, find_line(page, "rejected "))
        stack = text(rejected.find_element(By.CSS_SELECTOR, "pre.stacktrace"))
        assert stack.endswith(f"ValueError: {XSS_IMG}\n")
        assert json_in(rejected, "pre.properties:not(.resource)")["exception.message"] == XSS_IMG

        visible = page.find_element(By.ID, "logs").text
        for literal in (
            f"comment: {XSS_SCRIPT}",
            f"rejected {XSS_IMG}",
            XSS_PERSON,
            json.dumps(XSS_IMG),
            f"ValueError: {XSS_IMG}",
        ):
            assert literal in visible
        table = page.find_element(By.ID, "logs")
        for tag in ("img", "script", "b"):
            assert table.find_elements(By.TAG_NAME, tag) == [], f"a <{tag}> element was built"
        assert page.execute_script("return window.__pwned") is None

    def test_markup_in_exception_details_is_shown_as_text(
        self,
        page: Chrome,
        server: LocalServer,
        make_client: Callable[..., Client],
        attach: Callable[..., logging.Logger],
    ) -> None:
        """Markup in a local variable's value, a step's message and a step's property shows
        as literal text in an exception's details, and never runs."""
        client = make_client(capture_exception_code_variables=True)
        log = attach(PostHogHandler(client=client, exception_steps_level="INFO"))
        open_view(page, server)
        with posthog_logging.new_context():
            posthog_logging.identify_context("user_6")
            log.info("comment: %s", XSS_IMG, extra={"avatar": XSS_SCRIPT})
            try:
                save_comment(XSS_IMG)
            except ValueError:
                log.exception("could not save the comment")
        event = delivered_exception(client, server)
        details = open_details(page, find_row(page, "$exception", "user_6", "ValueError"))
        check_exception_details(details, event)
        frame = next(
            box
            for box in details.find_elements(By.CSS_SELECTOR, ".frame")
            if text(box.find_element(By.CSS_SELECTOR, ".where")).startswith("save_comment  ")
        )
        assert dict(variables(frame)) == {"body": XSS_IMG, "comment": XSS_IMG}
        [step] = step_rows(details)
        assert step["message"] == f"comment: {XSS_IMG}"
        assert step["props"] == f"avatar={json.dumps(XSS_SCRIPT)}"
        visible = page.find_element(By.ID, "events").text
        for literal in (f"comment: {XSS_IMG}", XSS_IMG, json.dumps(XSS_SCRIPT)):
            assert literal in visible
        table = page.find_element(By.ID, "events")
        for tag in ("img", "script"):
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
        assert any(url.startswith(f"{server.url}/api/logs?") for url in urls)
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

    def test_total_counts_the_matching_events(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """``total`` is how many stored events match the filters, however many the page
        holds (``after``, ``before``, ``limit``)."""

        def total(**params: Any) -> int:
            response = requests.get(f"{server.url}/api/events", params=params, timeout=WAIT)
            assert response.status_code == 200, response.text
            count: int = response.json()["total"]
            return count

        first, _, third = self.get(server)
        assert total() == 3
        assert total(limit=1) == total(after=first["seq"]) == total(before=third["seq"]) == 3
        assert total(event="signed_in") == 2
        assert total(distinct_id="ann") == 2
        assert total(session_id=logged["bob"]) == 1
        assert total(event="paid", distinct_id="ann", session_id=logged["ann"]) == 1
        assert total(event="paid", distinct_id="bob") == 0
        assert total(event="", distinct_id="", session_id="") == 3

    def test_before_pages_to_older_events(self, server: LocalServer) -> None:
        """``before`` returns the newest ``limit`` events that arrived before that seq,
        oldest first: a page of older events, filters applied."""
        store_events(server, 250)
        newest = requests.get(f"{server.url}/api/events", timeout=WAIT).json()
        assert [e["event"] for e in newest["events"]] == [f"step_{i}" for i in range(50, 250)]
        assert newest["total"] == 250
        oldest_shown = newest["events"][0]["seq"]
        older = requests.get(
            f"{server.url}/api/events", params={"before": oldest_shown}, timeout=WAIT
        ).json()
        assert [e["event"] for e in older["events"]] == [f"step_{i}" for i in range(50)]
        assert older["total"] == 250
        few = self.get(server, before=oldest_shown, limit=3)
        assert [e["event"] for e in few] == ["step_47", "step_48", "step_49"]
        by_session = self.get(server, before=oldest_shown, session_id="s-5")
        assert [e["event"] for e in by_session] == [f"step_{i}" for i in range(0, 50, 5)]
        assert self.get(server, before=newest["events"][0]["seq"] - 50) == []

    @pytest.mark.parametrize(
        "params", [{"after": "abc"}, {"after": "1.5"}, {"limit": "ten"}, {"before": "-1"}]
    )
    def test_bad_after_or_limit_is_400(self, server: LocalServer, params: dict[str, str]) -> None:
        """A non-integer ``after``, ``before`` or ``limit`` (or a negative ``before``) is
        answered 400 with a JSON error."""
        response = requests.get(f"{server.url}/api/events", params=params, timeout=WAIT)
        assert response.status_code == 400
        assert response.headers["Content-Type"].startswith("application/json")
        assert "integers" in response.json()["detail"]


class TestLogsApi:
    @pytest.fixture
    def logged(
        self, server: LocalServer, line_client: Client, line_log: logging.Logger
    ) -> dict[str, str]:
        """Three log lines by two people in two sessions; the sessions by person."""
        sessions = {"ann": uuid7(), "bob": uuid7()}
        for person, body in (("ann", "signed in"), ("bob", "signed in"), ("ann", "paid")):
            with posthog_logging.new_context():
                posthog_logging.identify_context(person)
                posthog_logging.set_context_session(sessions[person])
                posthog_logging.tag("step", body)
                line_log.info(body)
            assert line_client.flush(WAIT)  # one at a time: the order is known
        wait_for_lines(server, 3)
        return sessions

    @staticmethod
    def get(server: LocalServer, **params: Any) -> list[dict[str, Any]]:
        response = requests.get(f"{server.url}/api/logs", params=params, timeout=WAIT)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.headers["Cache-Control"] == "no-store"
        lines: list[dict[str, Any]] = response.json()["logs"]
        return lines

    def test_feed_lists_lines_oldest_first_with_seq(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """The feed returns every line as JSON, oldest first, each with an increasing seq,
        its person, session and service, attributes and resource."""
        lines = self.get(server)
        assert [(line["body"], line["distinct_id"]) for line in lines] == [
            ("signed in", "ann"),
            ("signed in", "bob"),
            ("paid", "ann"),
        ]
        seqs = [line["seq"] for line in lines]
        assert all(isinstance(seq, int) for seq in seqs)
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
        first = lines[0]
        assert first["session_id"] == logged["ann"]
        assert first["service_name"] == SERVICE
        assert (first["severity_text"], first["severity_number"]) == ("INFO", 9)
        assert first["attributes"]["step"] == "signed in"
        assert first["attributes"]["sessionId"] == logged["ann"]
        assert first["resource"]["service.name"] == SERVICE
        assert isinstance(first["time_unix_nano"], int)
        assert (first["trace_id"], first["span_id"]) == ("", "")
        assert {"received_at"} <= first.keys()

    def test_after_returns_only_later_lines(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """``after`` returns only the lines that arrived after that seq; ``limit`` caps them."""
        first, second, third = self.get(server)
        assert self.get(server, after=first["seq"]) == [second, third]
        assert self.get(server, after=third["seq"]) == []
        assert self.get(server, after=first["seq"], limit=1) == [second]
        assert self.get(server, limit=1) == [third]  # without after: the newest ones

    def test_filters_match_person_and_session(
        self, server: LocalServer, logged: dict[str, str]
    ) -> None:
        """``distinct_id`` and ``session_id`` each narrow the feed; empty ones don't, and
        lines have no event name to filter on."""
        assert [line["body"] for line in self.get(server, distinct_id="ann")] == [
            "signed in",
            "paid",
        ]
        by_session = self.get(server, session_id=logged["bob"])
        assert [(line["body"], line["distinct_id"]) for line in by_session] == [
            ("signed in", "bob")
        ]
        both = self.get(server, distinct_id="ann", session_id=logged["ann"])
        assert [line["body"] for line in both] == ["signed in", "paid"]
        assert self.get(server, distinct_id="bob", session_id=logged["ann"]) == []
        assert len(self.get(server, distinct_id="", session_id="")) == 3
        assert len(self.get(server, event="paid")) == 3

    def test_total_and_before(self, server: LocalServer, logged: dict[str, str]) -> None:
        """``total`` is how many stored lines match the person and session, however many
        the page holds; ``before`` returns the lines that arrived before that seq."""

        def answer(**params: Any) -> dict[str, Any]:
            response = requests.get(f"{server.url}/api/logs", params=params, timeout=WAIT)
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            return found

        first, second, third = self.get(server)
        assert answer()["total"] == 3
        assert answer(limit=1)["total"] == answer(after=first["seq"])["total"] == 3
        assert answer(distinct_id="ann")["total"] == 2
        assert answer(session_id=logged["bob"])["total"] == 1
        assert answer(distinct_id="bob", session_id=logged["ann"])["total"] == 0
        assert answer(distinct_id="", session_id="", event="paid")["total"] == 3
        assert self.get(server, before=third["seq"]) == [first, second]
        assert self.get(server, before=third["seq"], limit=1) == [second]
        assert self.get(server, before=third["seq"], distinct_id="ann") == [first]
        assert self.get(server, before=first["seq"]) == []

    @pytest.mark.parametrize(
        "params",
        [{"after": "abc"}, {"after": "1.5"}, {"after": "-1"}, {"limit": "ten"}, {"limit": "-5"}],
    )
    def test_bad_after_or_limit_is_400(self, server: LocalServer, params: dict[str, str]) -> None:
        """A non-integer or negative ``after`` or ``limit`` is answered 400 with a JSON error."""
        response = requests.get(f"{server.url}/api/logs", params=params, timeout=WAIT)
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
        """Two visits, with an exception's details open above their log lines, render to a
        PNG screenshot (saved to $POSTHOG_LOGGING_SCREENSHOT when set) that shows the events,
        the exception and the whole log table."""
        open_view(page, server)
        shop("user_42", uuid7())
        shop("user_7", uuid7())
        wait_tables(page, lambda t: (len(t[0]), len(t[1])) == (10, 12), "both visits")
        details = open_details(page, find_row(page, "$exception", "user_7", PAYMENT))
        check_exception_details(details, stored_exception(server, "user_7", "PaymentDeclined"))
        page.execute_script("window.scrollTo(0, 0)")
        # Tall enough for the log table, below the events, to be in the screenshot; the
        # panels grow with the window, so it grows until the table fits.
        logs_bottom = "document.getElementById('logs').getBoundingClientRect().bottom"
        size = page.get_window_size()

        def tall_enough(d: Chrome) -> bool:
            fits, bottom = d.execute_script(
                f"return [window.innerHeight >= ({logs_bottom}) + 16, {logs_bottom}]"
            )
            if not fits:
                d.set_window_size(size["width"], max(size["height"], int(bottom) + 200))
            return bool(fits)

        try:
            wait_for(page, tall_enough, "a window tall enough for the log table")
            bottom = int(page.execute_script(f"return {logs_bottom}")) + 1
            target = Path(os.environ.get("POSTHOG_LOGGING_SCREENSHOT") or tmp_path / "web-view.png")
            target.parent.mkdir(parents=True, exist_ok=True)
            assert page.save_screenshot(str(target))
            ratio = page.execute_script("return window.devicePixelRatio")
        finally:
            page.set_window_size(size["width"], size["height"])
        width, height = png_size(target)
        assert width >= 1000 and height >= 600
        assert height >= bottom * ratio, "the log table is cut off"
