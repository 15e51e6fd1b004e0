// The local server's web view: polls /api/events and /api/logs and renders what arrives.
// Event and log data are untrusted input: the DOM is built with textContent only, never HTML.
"use strict";

const POLL_MS = 1000;
const PAGE = 200;  // rows asked for at a time
const statusLine = document.getElementById("status");
const form = document.getElementById("filters");
let generation = 0;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function filters() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(form)) {
    if (String(value).trim()) params.set(name, String(value).trim());
  }
  return params;
}

function setFilter(name, value) {
  form.elements[name].value = value;
  restart();
}

function summary(event) {
  const props = event.properties || {};
  const list = props["$exception_list"];
  if (Array.isArray(list) && list.length) {
    const first = list[0] || {};
    // An error logged without an exception: its type is the message template.
    if (first.mechanism && first.mechanism.synthetic) return `${first.value}  (logged error)`;
    const chained = list.length > 1 ? ` (+${list.length - 1} chained)` : "";
    return `${first.type}: ${first.value}${chained}`;
  }
  return Object.keys(props)
    .filter((key) => !key.startsWith("$"))
    .map((key) => `${key}=${JSON.stringify(props[key])}`)
    .join(", ");
}

// What a frame's code_variables hold in place of a value that was not sent.
const MASKED = {
  "$$_posthog_redacted_based_on_masking_rules_$$": "[masked]",
  "$$_posthog_value_too_long_$$": "[too long]",
};
const LEVEL_CLASSES = {
  fatal: "sev-error", critical: "sev-error", error: "sev-error", warning: "sev-warn", warn: "sev-warn",
};
// The keys of an exception step that are shown in their own columns.
const STEP_KEYS = ["$timestamp", "$level", "$logger", "$message"];

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function asText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function levelClass(level) {
  const name = String(level ?? "").toLowerCase();
  return Object.hasOwn(LEVEL_CLASSES, name) ? LEVEL_CLASSES[name] : "";
}

function renderVariables(variables) {
  const table = el("table", null, "vars");
  for (const [name, value] of Object.entries(variables)) {
    const masked = typeof value === "string" && Object.hasOwn(MASKED, value);
    const cell = el("td", masked ? MASKED[value] : asText(value), masked ? "var-value mono masked" : "var-value mono");
    if (masked) cell.title = value;
    const row = el("tr");
    row.append(el("td", name, "var-name mono"), cell);
    table.append(row);
  }
  return table;
}

function renderFrame(frame) {
  const box = el("div", null, frame.in_app ? "frame in-app" : "frame");
  box.append(el("div", `${frame.function || "?"}  ${frame.filename || frame.abs_path || "?"}:${frame.lineno ?? "?"}`, "where mono"));
  if (frame.context_line !== undefined && frame.context_line !== null) {
    const code = el("pre", null, "code");
    for (const line of frame.pre_context || []) code.append(el("span", `${line}\n`));
    code.append(el("span", `${frame.context_line}\n`, "current"));
    for (const line of frame.post_context || []) code.append(el("span", `${line}\n`));
    box.append(code);
  }
  if (isObject(frame.code_variables) && Object.keys(frame.code_variables).length) {
    box.append(renderVariables(frame.code_variables));
  }
  return box;
}

// How it was caught, for the first exception; what it hangs off, for a chained one.
function mechanismText(mechanism) {
  const chained = mechanism.type === "chained"
    || (mechanism.parent_id !== undefined && mechanism.parent_id !== null);
  let shown = chained
    ? `chained (${mechanism.source ?? "?"}) of #${mechanism.parent_id ?? "?"}`
    : `mechanism: ${mechanism.type}`;
  if (!chained && mechanism.handled !== undefined && mechanism.handled !== null) {
    shown += ` · handled: ${mechanism.handled}`;
  }
  if (mechanism.synthetic === true) shown += " · synthetic";
  if (mechanism.is_exception_group === true) shown += " · exception group";
  return shown;
}

function renderException(entry, many) {
  const box = el("section", null, "exc");
  const mechanism = isObject(entry.mechanism) ? entry.mechanism : {};
  if (many) box.append(el("span", `#${mechanism.exception_id ?? "?"}`, "exc-id mono"));
  box.append(el("h3", `${entry.type}: ${entry.value}`));
  box.append(el("div", mechanismText(mechanism), "mechanism"));
  const frames = (entry.stacktrace && entry.stacktrace.frames) || [];
  for (const frame of frames) box.append(renderFrame(isObject(frame) ? frame : {}));
  return box;
}

function renderSteps(steps) {
  const box = el("section", null, "steps");
  box.append(el("h4", "Steps before the error"));
  const list = el("ol");
  for (const item of steps) {
    const step = isObject(item) ? item : { $message: item };
    const row = el("li", null, `step ${levelClass(step.$level)}`.trim());
    const stamp = step.$timestamp;
    const time = el("span", utc(new Date(stamp)).slice(11) || String(stamp ?? ""), "step-time mono");
    if (stamp !== undefined) time.title = String(stamp);
    row.append(
      time,
      el("span", step.$level ?? "", "step-level"),
      el("span", step.$logger ?? "", "step-logger mono"),
      el("span", asText(step.$message ?? ""), "step-message"),
    );
    const others = Object.keys(step)
      .filter((key) => !STEP_KEYS.includes(key))
      .sort()
      .map((key) => `${key}=${JSON.stringify(step[key])}`)
      .join(", ");
    if (others) row.append(el("span", others, "step-props mono"));
    list.append(row);
  }
  box.append(list);
  return box;
}

function renderDetails(event) {
  const cell = el("td");
  cell.colSpan = 5;
  const props = Object.assign({}, event.properties || {});
  const list = props["$exception_list"];
  delete props["$exception_list"];
  const steps = props["$exception_steps"];
  if (Array.isArray(steps)) delete props["$exception_steps"];
  const how = [props["$exception_level"], props["$exception_source"]].filter((part) => part !== undefined && part !== null && part !== "");
  if (how.length) {
    cell.append(el("div", how.map(String).join(" · "), `exc-level ${levelClass(props["$exception_level"])}`.trim()));
  }
  if (Array.isArray(list)) {
    for (const entry of list) cell.append(renderException(isObject(entry) ? entry : {}, list.length > 1));
  }
  if (Array.isArray(steps) && steps.length) cell.append(renderSteps(steps));
  const session = props["$session_id"];
  if (session) {
    const related = el("p", "Same session: ", "related");
    const link = el("a", "show this session's events, exceptions and log lines", "session-link");
    link.href = "#";
    link.addEventListener("click", (e) => { e.preventDefault(); setFilter("session_id", session); });
    related.append(link);
    cell.append(related);
  }
  if (props["$trace_id"]) {
    cell.append(el("div", `trace ${props["$trace_id"]} · span ${props["$span_id"] ?? "?"}`, "mono trace"));
  }
  cell.append(el("div", `uuid ${event.uuid} · timestamp ${event.timestamp}`, "mono"));
  cell.append(el("pre", JSON.stringify(props, null, 2), "properties"));
  const row = el("tr", null, "details");
  row.append(cell);
  return row;
}

function sessionLink(session) {
  const link = el("a", String(session).slice(0, 13) + "…", "session");
  link.href = "#";
  link.title = String(session);
  link.addEventListener("click", (e) => { e.preventDefault(); e.stopPropagation(); setFilter("session_id", session); });
  return link;
}

function utc(date) {
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().replace("T", " ").slice(0, 23);
}

function renderLine(line) {
  const severity = Number(line.severity_number) || 0;
  const level = severity >= 17 ? "sev-error" : severity >= 13 ? "sev-warn" : "";
  const row = el("tr", null, `line ${level}`.trim());
  const attributes = line.attributes || {};
  const body = typeof line.body === "string" ? line.body : JSON.stringify(line.body);
  const exception = attributes["exception.type"];
  row.append(
    el("td", utc(new Date(Number(line.time_unix_nano) / 1e6)), "mono"),
    el("td", line.severity_text || String(severity), "level"),
    el("td", line.service_name, "mono"),
    el("td", line.distinct_id, "person mono"),
  );
  const sessionCell = el("td", null, "mono");
  if (line.session_id) sessionCell.append(sessionLink(line.session_id));
  row.append(sessionCell, el("td", exception ? `${body}  [${exception}]` : body, "summary"));
  let details = null;
  row.addEventListener("click", () => {
    if (details) { details.remove(); details = null; return; }
    const cell = el("td");
    cell.colSpan = 6;
    const shown = Object.assign({}, attributes);
    const stack = shown["exception.stacktrace"];
    delete shown["exception.stacktrace"];
    if (stack) cell.append(el("pre", stack, "stacktrace"));
    if (line.trace_id) cell.append(el("div", `trace ${line.trace_id} · span ${line.span_id}`, "mono"));
    cell.append(el("pre", JSON.stringify(shown, null, 2), "properties"));
    cell.append(el("pre", JSON.stringify(line.resource || {}, null, 2), "properties resource"));
    details = el("tr", null, "details");
    details.append(cell);
    row.after(details);
  });
  return row;
}

function renderEvent(event) {
  const props = event.properties || {};
  const isException = event.event === "$exception";
  const row = el("tr", null, isException ? "event exception" : "event");
  row.dataset.uuid = event.uuid;
  const time = utc(new Date(event.timestamp)) || String(event.timestamp || "");
  row.append(el("td", time, "mono"), el("td", event.event, "name"), el("td", event.distinct_id, "person mono"));
  const sessionCell = el("td", null, "mono");
  const session = props["$session_id"];
  if (session) sessionCell.append(sessionLink(session));
  row.append(sessionCell, el("td", summary(event), "summary"));
  let details = null;
  row.addEventListener("click", () => {
    if (details) { details.remove(); details = null; return; }
    details = renderDetails(event);
    row.after(details);
  });
  return row;
}

async function feed(path, params, extra) {
  const query = filters();
  if (!extra) query.delete("event");  // the event name filters events only
  for (const [name, value] of Object.entries(params)) {
    if (value) query.set(name, String(value));
  }
  const response = await fetch(`${path}?${query}`, { cache: "no-store" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

// Each table: its rows, the newest and oldest seq shown, and how many stored rows match.
function list(name, path, extra, render, rowClass, noun) {
  return {
    name, path, extra, render, rowClass, noun,
    body: document.getElementById(name === "events" ? "event-rows" : "log-rows"),
    empty: document.getElementById(name === "events" ? "empty" : "logs-empty"),
    count: document.getElementById(`${name}-count`),
    older: document.getElementById(`${name}-older`),
    newest: 0, oldest: 0, total: 0, loading: false, noOlder: true,
  };
}
const tables = [
  list("events", "/api/events", true, renderEvent, "event", "events"),
  list("logs", "/api/logs", false, renderLine, "line", "log lines"),
];

function number(value) {
  return Number(value).toLocaleString("en-US");
}

function shownCount(table) {
  return table.body.querySelectorAll(`tr.${table.rowClass}`).length;
}

// "200 of 1,234 events shown" and a "show older" button while some are not shown.
function showCounts() {
  const parts = [];
  for (const table of tables) {
    const shown = shownCount(table);
    const more = !table.noOlder && table.total > shown;
    table.empty.hidden = shown > 0;
    table.count.textContent = more ? `${number(shown)} of ${number(table.total)} ${table.noun} shown` : "";
    table.older.hidden = !more;
    table.older.disabled = table.loading;
    parts.push(more ? `${number(shown)} of ${number(table.total)} ${table.noun}` : `${number(shown)} ${table.noun}`);
  }
  statusLine.textContent = `${parts.join(", ")} shown · updated ${new Date().toLocaleTimeString()}`;
}

function received(table, answer, rows, paged) {
  table.total = Number(answer.total) || 0;
  if (paged) table.noOlder = rows.length < PAGE;  // a page of the newest, or of older rows
  for (const row of rows) {
    table.newest = Math.max(table.newest, row.seq);
    table.oldest = table.oldest ? Math.min(table.oldest, row.seq) : row.seq;
  }
}

async function poll(mine) {
  try {
    const answers = await Promise.all(
      tables.map((table) => feed(table.path, { after: table.newest, limit: PAGE }, table.extra)),
    );
    if (mine !== generation) return;  // the filters changed meanwhile
    tables.forEach((table, index) => {
      const rows = answers[index][table.name];
      const first = !table.newest;  // asked for the newest rows, not those after one
      for (const row of rows) table.body.prepend(table.render(row));
      received(table, answers[index], rows, first);
    });
    showCounts();
  } catch (error) {
    statusLine.textContent = `cannot reach the server (${error.message}); retrying`;
  }
  if (mine === generation) setTimeout(() => poll(mine), POLL_MS);
}

// The page of rows older than the oldest shown, added under the table.
async function showOlder(table) {
  if (table.loading || !table.oldest) return;
  const mine = generation;
  table.loading = true;
  showCounts();
  let failed = null;
  try {
    const answer = await feed(table.path, { before: table.oldest, limit: PAGE }, table.extra);
    if (mine !== generation) return;
    const rows = answer[table.name];
    for (let i = rows.length - 1; i >= 0; i -= 1) table.body.append(table.render(rows[i]));
    received(table, answer, rows, true);
  } catch (error) {
    failed = error;
  } finally {
    if (mine === generation) table.loading = false;
  }
  if (mine !== generation) return;
  showCounts();
  if (failed) statusLine.textContent = `cannot reach the server (${failed.message}); try again`;
}

function restart() {
  generation += 1;
  for (const table of tables) {
    Object.assign(table, { newest: 0, oldest: 0, total: 0, loading: false, noOlder: true });
    table.body.replaceChildren();
  }
  showCounts();
  statusLine.textContent = "loading…";
  poll(generation);
}

document.getElementById("host").textContent = window.location.origin;
form.addEventListener("input", () => { clearTimeout(form.pending); form.pending = setTimeout(restart, 250); });
form.addEventListener("submit", (e) => { e.preventDefault(); restart(); });
document.getElementById("clear-filters").addEventListener("click", () => { form.reset(); restart(); });
for (const table of tables) table.older.addEventListener("click", () => showOlder(table));
restart();
