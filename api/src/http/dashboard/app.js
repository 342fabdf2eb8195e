// Parley's live dashboard: follows the account channel of the cable (resuming from its last
// position after a reconnect) and polls the operational endpoints. No dependencies.
"use strict";

const MAX_ROWS = 50;
const CHART_SECONDS = 120;

const state = {
  token: null,
  socket: null,
  position: null, // the last event delivered: a reconnect resumes after it
  perSecond: new Map(), // unix second -> events
  liveCalls: new Set(),
  events: new Map(), // event_id -> event, for the detail view
  seen: 0,
  timers: [],
};

const $ = (id) => document.getElementById(id);

function api(path) {
  return fetch(path, { headers: { authorization: `Bearer ${state.token}` } }).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const error = new Error(body.error || r.statusText);
      error.status = r.status;
      throw error;
    }
    return body;
  });
}

function setConnection(text, kind) {
  const pill = $("connection");
  pill.textContent = text;
  pill.className = `pill ${kind || ""}`;
}

async function login(token) {
  state.token = token.trim();
  $("login-error").textContent = "";
  try {
    await api("/api/v1/permissions"); // any valid credential may read this
  } catch (e) {
    state.token = null;
    $("login-error").textContent =
      e.status === 401 ? "That token or API key is not valid (or has ended)." : `Cannot sign in: ${e.message}`;
    return;
  }
  sessionStorage.setItem("parley-token", state.token);
  $("login").hidden = true;
  $("board").hidden = false;
  connect();
  poll();
  state.timers.push(setInterval(poll, 2000), setInterval(drawChart, 1000));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/api/v1/cable?token=${encodeURIComponent(state.token)}`);
  state.socket = socket;
  setConnection("connecting", "");
  socket.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    switch (frame.type) {
      case "welcome": {
        const subscribe = { command: "subscribe", channel: "account" };
        if (state.position) subscribe.after = state.position;
        socket.send(JSON.stringify(subscribe));
        break;
      }
      case "subscribed":
        setConnection("live", "live");
        if (!state.position) state.position = frame.position;
        showPosition();
        document.body.dataset.subscribed = "true";
        break;
      case "rejected":
        setConnection(`refused: ${frame.code}`, "down");
        $("login-error").textContent = "This credential may not follow the account (it needs audit.view).";
        break;
      case "event":
        onEvent(frame);
        break;
      default:
        break;
    }
  };
  socket.onclose = (event) => {
    document.body.dataset.subscribed = "false";
    if (event.code === 4401) {
      setConnection("signed out", "down");
      signOut("The credential ended or is not valid.");
      return;
    }
    setConnection("reconnecting", "down");
    setTimeout(() => state.token && connect(), 1000);
  };
}

function signOut(reason) {
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.token = null;
  sessionStorage.removeItem("parley-token");
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason;
}

function onEvent(frame) {
  const e = frame.event;
  state.position = frame.position;
  state.seen += 1;
  showPosition();
  const second = Math.floor(Date.now() / 1000);
  state.perSecond.set(second, (state.perSecond.get(second) || 0) + 1);
  if (e.event_type === "CallStarted") state.liveCalls.add(e.stream_id);
  if (e.event_type === "CallEnded" || e.event_type === "CallMissed") state.liveCalls.delete(e.stream_id);
  $("calls").textContent = String(state.liveCalls.size);
  state.events.set(e.event_id, e);
  const row = document.createElement("tr");
  row.dataset.eventId = e.event_id;
  row.dataset.eventType = e.event_type;
  for (const text of [
    new Date(e.recorded_at).toLocaleTimeString(),
    e.event_type,
    `${e.stream_type}/${e.stream_id.slice(0, 13)}`,
    e.actor_id ? e.actor_id.slice(0, 13) : "system",
  ]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.appendChild(cell);
  }
  row.addEventListener("click", () => showDetail(e.event_id));
  const body = $("events");
  body.insertBefore(row, body.firstChild);
  while (body.children.length > MAX_ROWS) {
    const last = body.lastChild;
    state.events.delete(last.dataset.eventId);
    body.removeChild(last);
  }
}

function showPosition() {
  $("position").textContent = state.position ? `position ${state.position} · ${state.seen} events` : "";
}

async function showDetail(eventId) {
  const e = state.events.get(eventId);
  if (!e) return;
  $("detail").hidden = false;
  $("detail-id").textContent = `${e.event_type} ${e.event_id}`;
  $("detail-data").textContent = JSON.stringify(e.data, null, 2);
  const chain = $("detail-chain");
  chain.replaceChildren();
  if (!e.correlation_id) {
    chain.textContent = "(no correlation id)";
    return;
  }
  try {
    const found = await api(`/api/v1/audit/events?correlation_id=${encodeURIComponent(e.correlation_id)}&limit=100`);
    for (const link of found.data) {
      const item = document.createElement("li");
      item.textContent = `${link.event_type} on ${link.stream_type}/${link.stream_id} (v${link.version})`;
      chain.appendChild(item);
    }
  } catch (err) {
    chain.textContent = `cannot read the chain: ${err.message}`;
  }
}

function drawChart() {
  const canvas = $("chart");
  const context = canvas.getContext("2d");
  const now = Math.floor(Date.now() / 1000);
  for (const second of state.perSecond.keys()) {
    if (second < now - CHART_SECONDS) state.perSecond.delete(second);
  }
  const values = [];
  for (let s = now - CHART_SECONDS + 1; s <= now; s += 1) values.push(state.perSecond.get(s) || 0);
  $("rate").textContent = String(values[values.length - 2] || 0);
  const max = Math.max(1, ...values);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#3b6fd8";
  const width = canvas.width / values.length;
  values.forEach((v, i) => {
    const height = (v / max) * (canvas.height - 4);
    context.fillRect(i * width, canvas.height - height, Math.max(1, width - 1), height);
  });
}

function fill(list, pairs) {
  list.replaceChildren();
  for (const [term, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

async function poll() {
  const tasks = [pollProjections(), pollJobs(), pollToday(), pollConnections()];
  await Promise.allSettled(tasks);
}

async function pollProjections() {
  const body = $("projections");
  try {
    const found = await api("/api/v1/admin/projections");
    body.replaceChildren();
    for (const p of found.data) {
      const row = document.createElement("tr");
      for (const text of [p.name, p.generation, p.status, p.lag, p.lag_seconds.toFixed(1)]) {
        const cell = document.createElement("td");
        cell.textContent = String(text);
        row.appendChild(cell);
      }
      body.appendChild(row);
    }
  } catch (e) {
    body.innerHTML = "";
    body.textContent = e.status === 403 ? "needs projections.manage" : e.message;
  }
}

async function pollJobs() {
  const count = async (query) => (await api(`/api/v1/admin/jobs?${query}&per_page=1`)).meta.pagination.total;
  try {
    const [available, scheduled, running, retryable, dead] = await Promise.all(
      ["state=available", "state=scheduled", "state=running", "state=retryable", "state=discarded"].map(count),
    );
    fill($("jobs"), [
      ["waiting", available],
      ["scheduled", scheduled],
      ["running", running],
      ["retrying", retryable],
      ["dead set", dead],
    ]);
  } catch (e) {
    fill($("jobs"), [["jobs", e.status === 403 ? "needs jobs.manage" : e.message]]);
  }
}

async function pollToday() {
  const today = new Date().toISOString().slice(0, 10);
  try {
    const found = await api(`/api/v1/analytics/daily?from=${today}&to=${today}`);
    const row = found.data[0] || {};
    fill($("today"), [
      ["messages", row.messages ?? 0],
      ["active users", row.active_users ?? 0],
      ["new conversations", row.new_conversations ?? 0],
      ["reactions", row.reactions ?? 0],
      ["calls", row.calls ?? 0],
      ["call minutes", row.call_minutes ?? 0],
    ]);
  } catch (e) {
    fill($("today"), [["analytics", e.status === 403 ? "needs analytics.view" : e.message]]);
  }
}

async function pollConnections() {
  try {
    const text = await (await fetch("/metrics")).text();
    const line = text.split("\n").find((l) => l.startsWith("parley_ws_connections"));
    $("connections").textContent = line ? String(Math.round(Number(line.split(" ").pop()))) : "–";
  } catch {
    $("connections").textContent = "–";
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("token").value);
});

const fromUrl = new URLSearchParams(location.search).get("token");
const remembered = fromUrl || sessionStorage.getItem("parley-token");
if (fromUrl) history.replaceState(null, "", location.pathname);
if (remembered) login(remembered);
