// The subscriber's web console: a live view of GET /messages/stream, a
// per-topic rate chart, the broker state, a publish form, and the values
// of the readings (a line per topic from GET /series, the latest of each
// from GET /topics, both carried on by a stream of their own). Plain script,
// no dependencies, so that it works offline from the embedded files. Every
// URL is relative, so the console also works behind a path prefix.
//
// With API_TOKEN set on the subscriber the console asks for the token and
// sends it as "Authorization: Bearer" on every read. EventSource cannot
// send headers, so the stream is read with fetch() and parsed here, and the
// console resumes it itself after the newest message shown; the token
// never goes into a URL, where logs and history would keep it.
"use strict";

(function () {
  const MAX_ROWS = 500;           // rows kept in the table
  const BACKLOG = 50;             // stored messages shown when a filter opens
  const WINDOW_S = 300;           // the chart covers the last 5 minutes
  const BIN_S = 5;                // one chart point per 5 seconds
  const MAX_SERIES = 6;           // topics drawn; the rest add up to "other"
  const PAYLOAD_CHARS = 300;      // payload shown in a cell; the rest in its title
  const READY_EVERY_MS = 5000;
  const REOPEN_MS = 5000;         // after the stream was refused (a non-200 answer)
  const RETRY_MS = 2000;          // after the stream ended, unless it says otherwise
  const TOKEN_KEY = "mqtt-console-api-token";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#6b7280"];

  const $ = (id) => document.getElementById(id);
  const ui = {
    filterForm: $("filter-form"),
    filter: $("filter"),
    filterError: $("filter-error"),
    brokerState: $("broker-state"),
    streamState: $("stream-state"),
    chart: $("chart"),
    legend: $("legend"),
    publish: $("publish"),
    publishForm: $("publish-form"),
    publishResult: $("publish-result"),
    tbody: document.querySelector("#messages tbody"),
    count: $("count"),
    clear: $("clear"),
    tokenPanel: $("token-panel"),
    tokenForm: $("token-form"),
    token: $("token"),
    tokenError: $("token-error"),
    tokenForget: $("token-forget"),
  };

  const state = {
    filter: "#",
    abort: null,         // the AbortController of the open stream
    lastId: 0,           // the newest message id shown
    generation: 0,       // bumps on every (re)open, so stale callbacks do nothing
    reopenTimer: 0,
    retryMs: RETRY_MS,   // the stream's own retry: field wins
    bins: new Map(),     // topic -> Map(bin start in seconds -> count)
    publisherURL: "",
    tokenRequired: false,
    token: "",           // kept in sessionStorage too, when the browser allows
  };

  // ---- topic filters (MQTT 3.1.1, section 4.7) ----

  function filterError(f) {
    if (f === "") return "the filter is empty";
    if (f.includes("\u0000")) return "the filter contains U+0000";
    if (new TextEncoder().encode(f).length > 65535) return "the filter is longer than 65535 bytes";
    const levels = f.split("/");
    for (let i = 0; i < levels.length; i++) {
      const l = levels[i];
      if (l.includes("#") && (l !== "#" || i !== levels.length - 1)) return "'#' must be the last level, alone";
      if (l.includes("+") && l !== "+") return "'+' must be alone in its level";
    }
    return "";
  }

  // ---- the table ----

  function two(n) { return String(n).padStart(2, "0"); }

  function clock(d) {
    return two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds()) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function hex(b64) {
    let bin;
    try {
      bin = atob(b64);
    } catch (e) {
      return { text: b64, full: b64 };
    }
    const parts = [];
    for (let i = 0; i < bin.length; i++) parts.push(bin.charCodeAt(i).toString(16).padStart(2, "0"));
    const full = parts.join(" ");
    return { text: full, full: full, bytes: bin.length };
  }

  // cell adds a cell; label names it where a narrow screen hides the head.
  function cell(tr, cls, text, title, label) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    if (title) td.title = title;
    if (label) td.dataset.label = label;
    tr.appendChild(td);
    return td;
  }

  function row(m, fresh) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(m.id);
    tr.dataset.topic = m.topic;
    if (fresh) tr.className = "new";
    const at = new Date(m.received_at);
    cell(tr, "time", isNaN(at) ? m.received_at : clock(at), m.received_at);
    cell(tr, "topic", m.topic);
    cell(tr, "num", String(m.qos), "", "QoS");
    cell(tr, "flag retained", m.retained ? "\u2713" : "", m.retained ? "retained" : "", "retained");
    cell(tr, "flag dup", m.duplicate ? "\u2713" : "", m.duplicate ? "possibly a redelivery" : "", "duplicate");
    const td = cell(tr, "payload", "");
    let text = m.payload;
    let full = m.payload;
    if (m.encoding === "base64") {
      const h = hex(m.payload);
      text = h.text;
      full = h.full;
      const badge = document.createElement("span");
      badge.className = "enc";
      badge.textContent = "hex";
      badge.title = "binary payload, shown as hex bytes";
      td.appendChild(badge);
    }
    td.appendChild(document.createTextNode(text.length > PAYLOAD_CHARS ? text.slice(0, PAYLOAD_CHARS) + "\u2026" : text));
    if (text.length > PAYLOAD_CHARS) td.title = full;
    return tr;
  }

  function showCount() {
    const n = ui.tbody.rows.length;
    ui.count.textContent = n === 0 ? "(waiting for messages)" : "(" + n + (n === MAX_ROWS ? ", the newest" : "") + ")";
  }

  // add puts m on top of the table and into the chart.
  function add(m, fresh) {
    if (typeof m.id !== "number" || m.id <= state.lastId) return;
    state.lastId = m.id;
    ui.tbody.insertBefore(row(m, fresh), ui.tbody.firstChild);
    while (ui.tbody.rows.length > MAX_ROWS) ui.tbody.deleteRow(-1);
    count(m);
    showCount();
  }

  // ---- the chart ----

  function count(m) {
    const now = Date.now() / 1000;
    let t = Date.parse(m.received_at) / 1000;
    if (isNaN(t)) return;
    if (t > now) t = now; // clocks a little apart
    if (t < now - WINDOW_S - BIN_S) return;
    const bin = Math.floor(t / BIN_S) * BIN_S;
    let bins = state.bins.get(m.topic);
    if (!bins) {
      bins = new Map();
      state.bins.set(m.topic, bins);
    }
    bins.set(bin, (bins.get(bin) || 0) + 1);
  }

  // series returns the topics to draw, busiest first, with per-bin rates.
  // The newest bin is still filling: its rate is over the seconds so far.
  function series(firstBin, nbins, now) {
    const current = Math.max(1, now - (firstBin + (nbins - 1) * BIN_S));
    const all = [];
    for (const [topic, bins] of state.bins) {
      const rates = new Array(nbins).fill(0);
      let total = 0;
      for (const [bin, n] of bins) {
        const i = (bin - firstBin) / BIN_S;
        if (i < 0) {
          bins.delete(bin); // out of the window for good
          continue;
        }
        if (i < nbins) {
          rates[i] = n / (i === nbins - 1 ? current : BIN_S);
          total += n;
        }
      }
      if (bins.size === 0) {
        state.bins.delete(topic);
        continue;
      }
      if (total > 0) all.push({ topic: topic, rates: rates, total: total });
    }
    all.sort((a, b) => b.total - a.total || (a.topic < b.topic ? -1 : 1));
    if (all.length <= MAX_SERIES + 1) return all;
    const other = { topic: "other (" + (all.length - MAX_SERIES) + " topics)", rates: new Array(nbins).fill(0), total: 0 };
    for (const s of all.slice(MAX_SERIES)) {
      other.total += s.total;
      s.rates.forEach((r, i) => { other.rates[i] += r; });
    }
    return all.slice(0, MAX_SERIES).concat([other]);
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const k of [1, 2, 2.5, 5, 10]) if (k * p >= v) return k * p;
    return 10 * p;
  }

  function draw() {
    const canvas = ui.chart;
    const css = getComputedStyle(document.documentElement);
    const fg = css.getPropertyValue("--muted").trim() || "#666";
    const grid = css.getPropertyValue("--line").trim() || "#ddd";
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w === 0 || h === 0) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);

    const nbins = WINDOW_S / BIN_S;
    const now = Date.now() / 1000;
    const lastBin = Math.floor(now / BIN_S) * BIN_S;
    const firstBin = lastBin - (nbins - 1) * BIN_S;
    const ss = series(firstBin, nbins, now);
    let peak = 0;
    for (const s of ss) for (const r of s.rates) peak = Math.max(peak, r);
    const top = niceMax(peak);

    g.font = "11px system-ui, sans-serif";
    let left = 0;
    for (let k = 0; k <= 4; k++) left = Math.max(left, g.measureText(fmtRate((top * k) / 4)).width);
    left = Math.ceil(left) + 8;
    const right = 6, up = 8, bottom = 18;
    const pw = w - left - right, ph = h - up - bottom;
    const x = (i) => left + (nbins === 1 ? 0 : (i / (nbins - 1)) * pw);
    const y = (v) => up + ph - (v / top) * ph;

    g.strokeStyle = grid;
    g.fillStyle = fg;
    g.lineWidth = 1;
    g.textBaseline = "middle";
    g.textAlign = "right";
    for (let k = 0; k <= 4; k++) {
      const v = (top * k) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.beginPath();
      g.moveTo(left, yy);
      g.lineTo(left + pw, yy);
      g.stroke();
      g.fillText(fmtRate(v), left - 4, yy);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (let min = 5; min >= 0; min--) {
      const i = nbins - 1 - (min * 60) / BIN_S;
      if (i < 0) continue;
      g.fillText(min === 0 ? "now" : "-" + min + "m", Math.min(Math.max(x(i), left + 10), left + pw - 10), up + ph + 4);
    }

    ss.forEach((s, k) => {
      g.strokeStyle = COLORS[k % COLORS.length];
      g.lineWidth = 1.75;
      g.lineJoin = "round";
      g.beginPath();
      s.rates.forEach((r, i) => {
        if (i === 0) g.moveTo(x(i), y(r));
        else g.lineTo(x(i), y(r));
      });
      g.stroke();
    });
    legend(ss);
  }

  function fmtRate(v) {
    return String(Number(v.toPrecision(3)));
  }

  let legendKey = null;
  function legend(ss) {
    const key = ss.map((s) => s.topic).join("\u0000");
    if (key === legendKey) return;
    legendKey = key;
    ui.legend.replaceChildren();
    if (ss.length === 0) {
      const li = document.createElement("li");
      li.className = "hint";
      li.textContent = "no messages in the last 5 minutes";
      ui.legend.appendChild(li);
      return;
    }
    ss.forEach((s, k) => {
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = COLORS[k % COLORS.length];
      li.appendChild(sw);
      li.appendChild(document.createTextNode(s.topic));
      ui.legend.appendChild(li);
    });
  }

  // ---- the API token ----

  function loadToken() {
    try {
      state.token = sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (e) {
      state.token = ""; // storage disabled: the token lives in memory only
    }
  }

  function saveToken(t) {
    state.token = t;
    try {
      if (t === "") sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, t);
    } catch (e) {
      // storage disabled: memory only
    }
    ui.tokenForget.hidden = t === "";
  }

  // auth is the headers every read of the API carries.
  function auth(extra) {
    const h = Object.assign({}, extra);
    if (state.token !== "") h.Authorization = "Bearer " + state.token;
    return h;
  }

  // askToken stops reading and asks for the token, saying why.
  function askToken(why) {
    closeStream();
    closeValuesStream();
    saveToken("");
    setState(ui.streamState, "bad", "stream: needs the API token");
    ui.tokenPanel.hidden = false;
    ui.tokenError.hidden = why === "";
    ui.tokenError.textContent = why;
    ui.token.setAttribute("aria-invalid", why === "" ? "false" : "true");
    ui.token.value = "";
    ui.token.focus();
  }

  ui.tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = ui.token.value.trim();
    if (t === "") return;
    saveToken(t);
    ui.token.value = "";
    ui.tokenPanel.hidden = true;
    applyFilter(state.filter);
    loadValues();
  });

  ui.tokenForget.addEventListener("click", () => {
    if (state.tokenRequired) askToken("");
    else saveToken("");
  });

  // ---- the stream ----

  function setState(el, cls, text) {
    el.className = "state " + cls;
    el.textContent = text;
  }

  function closeStream() {
    state.generation++;
    clearTimeout(state.reopenTimer);
    if (state.abort) {
      state.abort.abort();
      state.abort = null;
    }
  }

  function streamURL(after) {
    return "messages/stream?topic=" + encodeURIComponent(state.filter) + "&after=" + after;
  }

  // reopen opens the stream again after ms, from the newest message shown.
  function reopen(gen, ms) {
    clearTimeout(state.reopenTimer);
    state.reopenTimer = setTimeout(() => {
      if (gen !== state.generation) return;
      closeStream();
      openStream(state.lastId);
    }, ms);
  }

  // openStream reads GET /messages/stream from after on, as Server-Sent
  // Events, until the filter changes; when the stream ends or breaks it
  // opens it again after the newest message shown.
  function openStream(after) {
    follow(state, state.generation, streamURL(after), (gen, type, data) => onEvent(gen, type, data), reopen,
      (cls, text) => setState(ui.streamState, cls, text));
  }

  // follow reads the event stream at url for generation gen of s (the
  // messages' state or the values'), hands its events to onEvent while gen
  // is current, and has reopen open it again when it is refused, ends or
  // breaks; status tells how it goes.
  async function follow(s, gen, url, onEvent, reopen, status) {
    const alive = () => gen === s.generation;
    const ctrl = new AbortController();
    s.abort = ctrl;
    status("warn", "stream: connecting");
    let r;
    try {
      r = await fetch(url, { headers: auth({ Accept: "text/event-stream" }), cache: "no-store", signal: ctrl.signal });
    } catch (e) {
      if (!alive()) return;
      status("bad", "stream: subscriber unreachable, retrying");
      reopen(gen, REOPEN_MS);
      return;
    }
    if (!alive()) {
      ctrl.abort();
      return;
    }
    if (r.status === 401) {
      askToken("The subscriber refused the token; enter it again.");
      return;
    }
    if (!r.ok || !r.body) {
      // Refused for now (503: the store, or too many reads): try again a
      // while later, as the answer says if it does.
      const wait = Number(r.headers.get("Retry-After"));
      status("bad", "stream: HTTP " + r.status + ", retrying");
      reopen(gen, wait > 0 ? wait * 1000 : REOPEN_MS);
      return;
    }
    status("ok", "stream: live");
    try {
      await readEvents(r.body, alive, (type, data) => onEvent(gen, type, data), (ms) => { s.retryMs = ms; });
    } catch (e) {
      // the connection broke: resume below
    }
    if (!alive()) return;
    status("warn", "stream: reconnecting");
    reopen(gen, s.retryMs);
  }

  // readEvents parses an event stream (the WHATWG rules for the fields
  // this server sends) and hands each event to handle while alive() holds;
  // a retry field goes to retry.
  async function readEvents(body, alive, handle, retry) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done || !alive()) {
        reader.cancel().catch(() => {});
        return;
      }
      buf += value;
      let start = 0;
      for (;;) {
        const nl = buf.indexOf("\n", start);
        if (nl < 0) break;
        let line = buf.slice(start, nl);
        start = nl + 1;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length > 0) handle(type || "message", data.join("\n"));
          type = "";
          data = [];
          continue;
        }
        if (line[0] === ":") continue; // a comment: the server's ping
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let v = colon < 0 ? "" : line.slice(colon + 1);
        if (v[0] === " ") v = v.slice(1);
        if (field === "data") data.push(v);
        else if (field === "event") type = v;
        else if (field === "retry" && /^\d+$/.test(v)) retry(Number(v));
      }
      buf = buf.slice(start);
    }
  }

  function onEvent(gen, type, data) {
    if (gen !== state.generation) return;
    if (type === "reconnect") {
      // The server ends the stream (the client fell behind): resume.
      setState(ui.streamState, "warn", "stream: resuming");
      return;
    }
    if (type !== "message") return;
    let m;
    try {
      m = JSON.parse(data);
    } catch (e) {
      return;
    }
    add(m, true);
  }

  // applyFilter shows the newest stored messages for the filter, then
  // streams everything after the newest of them.
  async function applyFilter(f) {
    closeStream();
    const gen = state.generation;
    state.filter = f;
    state.lastId = 0;
    state.bins.clear();
    ui.tbody.replaceChildren();
    showCount();
    draw();
    const url = new URL(window.location.href);
    if (f === "#") url.searchParams.delete("topic");
    else url.searchParams.set("topic", f);
    history.replaceState(null, "", url);
    if (state.tokenRequired && state.token === "") {
      askToken("");
      return;
    }

    let backlog = [];
    try {
      const r = await fetch("messages?limit=" + BACKLOG + "&topic=" + encodeURIComponent(f), { headers: auth(), cache: "no-store" });
      if (gen !== state.generation) return;
      if (r.status === 401) {
        askToken("The subscriber refused the token; enter it again.");
        return;
      }
      if (r.ok) backlog = (await r.json()).messages || [];
    } catch (e) {
      backlog = []; // the stream's own state tells the user
    }
    if (gen !== state.generation) return;
    for (let i = backlog.length - 1; i >= 0; i--) add(backlog[i], false);
    draw();
    openStream(state.lastId);
  }

  ui.filterForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = ui.filter.value.trim();
    const err = filterError(f);
    ui.filterError.hidden = err === "";
    ui.filterError.textContent = err;
    ui.filter.setAttribute("aria-invalid", err === "" ? "false" : "true");
    if (err === "") applyFilter(f);
  });

  ui.clear.addEventListener("click", () => {
    ui.tbody.replaceChildren();
    showCount();
  });

  // ---- broker state ----

  async function pollReady() {
    try {
      const r = await fetch("readyz", { cache: "no-store" });
      if (r.ok) {
        setState(ui.brokerState, "ok", "broker: connected");
      } else {
        let why = "HTTP " + r.status;
        try {
          const p = await r.json();
          if (p && p.detail) why = p.detail;
        } catch (e) {
          why = "HTTP " + r.status;
        }
        setState(ui.brokerState, "bad", "not ready: " + why);
      }
    } catch (e) {
      setState(ui.brokerState, "bad", "subscriber unreachable");
    }
    setTimeout(pollReady, READY_EVERY_MS);
  }

  // ---- publishing through the publisher ----

  function result(cls, text) {
    ui.publishResult.className = "result " + cls;
    ui.publishResult.textContent = text;
  }

  async function publish(ev) {
    ev.preventDefault();
    const body = {
      topic: $("pub-topic").value,
      message: $("pub-message").value,
      qos: Number($("pub-qos").value),
      retain: $("pub-retain").checked,
      encoding: $("pub-encoding").value,
    };
    const headers = { "Content-Type": "application/json" };
    const token = $("pub-token").value;
    if (token !== "") headers.Authorization = "Bearer " + token;
    result("", "publishing\u2026");
    let r;
    try {
      r = await fetch(state.publisherURL + "/publish", { method: "POST", headers: headers, body: JSON.stringify(body) });
    } catch (e) {
      result("bad", "could not reach the publisher at " + state.publisherURL +
        " (is it running, and does its CORS_ALLOWED_ORIGINS include " + window.location.origin + "?)");
      return;
    }
    let answer = null;
    try {
      answer = await r.json();
    } catch (e) {
      answer = null;
    }
    if (r.ok && answer) {
      result("ok", "published to " + answer.topic + " (QoS " + answer.qos + (answer.retain ? ", retained" : "") + ", " + answer.bytes + " bytes)");
    } else {
      const detail = answer && (answer.detail || answer.title);
      result("bad", r.status + " " + (detail || r.statusText));
    }
  }

  async function loadConfig() {
    try {
      const r = await fetch("console/config.json", { cache: "no-store" });
      if (r.ok) {
        const c = await r.json();
        state.publisherURL = (c.publisher_url || "").replace(/\/+$/, "");
        state.tokenRequired = c.token_required === true;
      }
    } catch (e) {
      state.publisherURL = "";
    }
    ui.publish.hidden = state.publisherURL === "";
    if (state.publisherURL !== "") {
      ui.publishForm.addEventListener("submit", publish);
      $("publish-title").title = "POST " + state.publisherURL + "/publish";
    }
  }

  // ---- values: readings drawn from GET /series and GET /topics ----

  // The numbers of a payload, by field, by the subscriber's rules (package
  // values): a JSON number is the field "value"; an object gives its
  // numeric members by dotted path, nested objects included, arrays and
  // everything else left out. Text that is not JSON has none.
  const MAX_FIELDS = 64;
  const MAX_DEPTH = 8;
  const MAX_FIELD_BYTES = 200;
  const encoder = new TextEncoder();

  function extractValues(m) {
    const out = {};
    if (m.encoding !== "text") return out;
    const c = m.payload.replace(/^[ \t\r\n]+/, "").charAt(0);
    if (c !== "{" && c !== "-" && !(c >= "0" && c <= "9")) return out;
    let v;
    try {
      v = JSON.parse(m.payload);
    } catch (e) {
      return out;
    }
    let n = 0;
    const put = (field, x) => {
      if (!Number.isFinite(x)) return;
      if (!(field in out)) {
        if (n >= MAX_FIELDS) return;
        n++;
      }
      out[field] = x === 0 ? 0 : x;
    };
    const walk = (o, path, depth) => {
      if (depth > MAX_DEPTH) return;
      for (const k of Object.keys(o)) {
        if (k === "" || /[\u0000-\u001f\u007f]/.test(k)) continue;
        const f = path === "" ? k : path + "." + k;
        if (encoder.encode(f).length > MAX_FIELD_BYTES) continue;
        const x = o[k];
        if (typeof x === "number") put(f, x);
        else if (x !== null && typeof x === "object" && !Array.isArray(x)) walk(x, f, depth + 1);
      }
    };
    if (typeof v === "number") put("value", v);
    else if (v !== null && typeof v === "object" && !Array.isArray(v)) walk(v, "", 1);
    return out;
  }

  function fmtNumber(v) {
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e9 || a < 1e-4)) return v.toExponential(3);
    return String(Number(v.toPrecision(6)));
  }

  const vui = {
    form: $("values-form"),
    filter: $("values-filter"),
    field: $("values-field"),
    range: $("values-range"),
    error: $("values-error"),
    chart: $("values-chart"),
    empty: $("values-empty"),
    legend: $("values-legend"),
    tbody: document.querySelector("#readings tbody"),
    count: $("values-count"),
    csv: $("values-csv"),
    ndjson: $("values-ndjson"),
  };
  const SVG_NS = vui.chart.namespaceURI;

  const vs = {
    filter: "#",
    field: "",
    rangeMs: 86400 * 1000,
    stepMs: 0,
    generation: 0,
    abort: null,
    reopenTimer: 0,
    retryMs: RETRY_MS,
    lastId: 0,            // the newest message id applied
    replay: true,         // the stream resumes after lastId (else: live only)
    series: new Map(),    // topic -> [{t, count, sum, min, max, last}] of vs.field
    topics: new Map(),    // topic -> {count, lastAt, values}
    drawTimer: 0,
  };

  function valuesError(text) {
    vui.error.hidden = text === "";
    vui.error.textContent = text;
  }

  // problemText reads why an answer was refused (a problem detail).
  async function problemText(r) {
    try {
      const p = await r.json();
      if (p && p.detail) return p.detail;
    } catch (e) {
      // not JSON
    }
    return "HTTP " + r.status;
  }

  function closeValuesStream() {
    vs.generation++;
    clearTimeout(vs.reopenTimer);
    if (vs.abort) {
      vs.abort.abort();
      vs.abort = null;
    }
  }

  // exportLinks points the download links at the messages under the
  // filter in the range; with a token they are fetched by script (a link
  // cannot send the header).
  function exportLinks() {
    const since = new Date(Date.now() - vs.rangeMs).toISOString();
    for (const [a, format] of [[vui.csv, "csv"], [vui.ndjson, "ndjson"]]) {
      a.href = "messages?format=" + format + "&topic=" + encodeURIComponent(vs.filter) + "&since=" + encodeURIComponent(since);
    }
  }

  async function download(ev) {
    exportLinks();
    if (state.token === "") return; // the browser follows the link
    ev.preventDefault();
    const a = ev.currentTarget;
    let r;
    try {
      r = await fetch(a.href, { headers: auth(), cache: "no-store" });
    } catch (e) {
      valuesError("the download failed: the subscriber is unreachable");
      return;
    }
    if (r.status === 401) {
      askToken("The subscriber refused the token; enter it again.");
      return;
    }
    if (!r.ok) {
      valuesError("the download failed: " + (await problemText(r)));
      return;
    }
    const url = URL.createObjectURL(await r.blob());
    const tmp = document.createElement("a");
    tmp.href = url;
    tmp.download = a.getAttribute("download");
    document.body.appendChild(tmp);
    tmp.click();
    tmp.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  vui.csv.addEventListener("click", download);
  vui.ndjson.addEventListener("click", download);

  // fields lists the fields the topics have, for the picker.
  function fillFields() {
    const fields = new Set();
    for (const t of vs.topics.values()) for (const f of Object.keys(t.values)) fields.add(f);
    const list = Array.from(fields).sort();
    if (vs.field !== "" && !fields.has(vs.field)) list.unshift(vs.field);
    const key = list.join("\u0000");
    if (vui.field.dataset.key === key) return;
    vui.field.dataset.key = key;
    vui.field.replaceChildren();
    for (const f of list) {
      const o = document.createElement("option");
      o.value = f;
      o.textContent = f;
      vui.field.appendChild(o);
    }
    vui.field.value = vs.field;
    vui.field.disabled = list.length === 0;
  }

  // loadValues shows the filter's readings: the latest of each topic
  // (GET /topics), the chosen field's buckets over the range (GET
  // /series), then what the stream brings from there on.
  async function loadValues() {
    closeValuesStream();
    const gen = vs.generation;
    vs.series = new Map();
    vs.topics = new Map();
    vs.lastId = 0;
    exportLinks();
    valuesError("");
    if (state.tokenRequired && state.token === "") return;

    let r;
    try {
      r = await fetch("topics?limit=1000&topic=" + encodeURIComponent(vs.filter), { headers: auth(), cache: "no-store" });
    } catch (e) {
      valuesError("the subscriber is unreachable");
      return;
    }
    if (gen !== vs.generation) return;
    if (r.status === 401) {
      askToken("The subscriber refused the token; enter it again.");
      return;
    }
    if (!r.ok) {
      valuesError(await problemText(r));
      return;
    }
    const page = await r.json();
    if (gen !== vs.generation) return;
    for (const t of page.topics || []) {
      vs.topics.set(t.topic, { count: t.count, lastAt: t.last_at, values: t.values || {} });
      vs.lastId = Math.max(vs.lastId, t.last ? t.last.id : 0);
    }
    vui.count.textContent = page.next ? "(the first " + vs.topics.size + " topics)" : "";
    // With more topics than shown, the newest message shown may be old
    // beside the others': follow live rather than replay from it.
    vs.replay = !page.next;
    if (vs.field === "") {
      const fields = new Set();
      for (const t of vs.topics.values()) for (const f of Object.keys(t.values)) fields.add(f);
      vs.field = fields.has("value") ? "value" : (Array.from(fields).sort()[0] || "");
    }
    fillFields();

    if (vs.field !== "") {
      const since = new Date(Date.now() - vs.rangeMs).toISOString();
      try {
        r = await fetch("series?topic=" + encodeURIComponent(vs.filter) + "&field=" + encodeURIComponent(vs.field) +
          "&since=" + encodeURIComponent(since), { headers: auth(), cache: "no-store" });
      } catch (e) {
        valuesError("the subscriber is unreachable");
        return;
      }
      if (gen !== vs.generation) return;
      if (!r.ok) {
        valuesError(await problemText(r));
      } else {
        const a = await r.json();
        if (gen !== vs.generation) return;
        vs.stepMs = stepMs(a.step);
        for (const s of a.series || []) {
          vs.series.set(s.topic, s.points.map((p) => ({ t: Date.parse(p.t), count: p.count, sum: p.avg * p.count, min: p.min, max: p.max, last: p.last })));
        }
      }
    }
    renderReadings();
    drawValues();
    openValuesStream(gen);
  }

  // stepMs reads the step of an answer of GET /series (90s, 5m, 1h, 1d).
  function stepMs(s) {
    const m = /^(\d+)([smhd])$/.exec(s || "");
    if (!m) return 60000;
    return Number(m[1]) * { s: 1000, m: 60000, h: 3600000, d: 86400000 }[m[2]];
  }

  // openValuesStream follows the filter's arrivals after the newest one
  // shown (live only when none is), and opens it again when it ends.
  function openValuesStream(gen) {
    if (gen !== vs.generation) return;
    let u = "messages/stream?topic=" + encodeURIComponent(vs.filter);
    if (vs.lastId > 0 && vs.replay) u += "&after=" + vs.lastId;
    follow(vs, gen, u, (gen, type, data) => {
      if (type !== "message") return;
      try {
        applyReading(JSON.parse(data));
      } catch (e) {
        // not a message: ignored
      }
    }, reopenValues, () => {});
  }

  function reopenValues(gen, ms) {
    clearTimeout(vs.reopenTimer);
    vs.reopenTimer = setTimeout(() => {
      if (gen !== vs.generation) return;
      if (vs.abort) vs.abort.abort();
      openValuesStream(gen);
    }, ms);
  }

  // applyReading adds an arrival to the table and, when it has the chosen
  // field, to its topic's line.
  function applyReading(m) {
    if (typeof m.id !== "number" || m.id <= vs.lastId) return;
    vs.lastId = m.id;
    vs.replay = true; // a reconnect resumes after the newest arrival
    const vals = extractValues(m);
    let t = vs.topics.get(m.topic);
    if (!t) {
      t = { count: 0, lastAt: m.received_at, values: {} };
      vs.topics.set(m.topic, t);
    }
    t.count++;
    t.lastAt = m.received_at;
    Object.assign(t.values, vals);
    renderReading(m.topic, t, true);
    if (Object.keys(vals).length > 0) fillFields();
    const v = vals[vs.field];
    const at = Date.parse(m.received_at);
    if (v !== undefined && vs.stepMs > 0 && !isNaN(at)) {
      const start = Math.floor(at / vs.stepMs) * vs.stepMs;
      let pts = vs.series.get(m.topic);
      if (!pts) {
        pts = [];
        vs.series.set(m.topic, pts);
      }
      let p = pts[pts.length - 1];
      if (!p || p.t < start) {
        p = { t: start, count: 0, sum: 0, min: v, max: v, last: v };
        pts.push(p);
      }
      if (p.t === start) {
        p.count++;
        p.sum += v;
        p.min = Math.min(p.min, v);
        p.max = Math.max(p.max, v);
        p.last = v;
      }
    }
    clearTimeout(vs.drawTimer);
    vs.drawTimer = setTimeout(drawValues, 200);
  }

  function valuesText(td, values) {
    td.replaceChildren();
    const fields = Object.keys(values).sort((a, b) => (a === vs.field ? -1 : b === vs.field ? 1 : a < b ? -1 : a > b ? 1 : 0));
    if (fields.length === 0) {
      td.textContent = "\u2014";
      td.title = "no numbers in the newest messages";
      return;
    }
    fields.forEach((f, i) => {
      if (i > 0) td.appendChild(document.createTextNode(" \u00b7 "));
      const name = document.createElement("span");
      name.className = "hint";
      name.textContent = f + " ";
      td.appendChild(name);
      const val = document.createElement(f === vs.field ? "b" : "span");
      val.textContent = fmtNumber(values[f]);
      val.dataset.field = f;
      td.appendChild(val);
    });
  }

  function readingRow(topic) {
    const tr = document.createElement("tr");
    tr.dataset.topic = topic;
    cell(tr, "topic", topic);
    cell(tr, "vals", "", "", "");
    cell(tr, "time", "", "", "");
    cell(tr, "num", "", "", "messages");
    return tr;
  }

  function renderReading(topic, t, fresh) {
    let tr = vui.tbody.querySelector("tr[data-topic=" + JSON.stringify(topic) + "]");
    if (!tr) {
      tr = readingRow(topic);
      // In name order, as GET /topics lists them.
      let before = null;
      for (const row of vui.tbody.rows) {
        if (row.dataset.topic > topic) {
          before = row;
          break;
        }
      }
      vui.tbody.insertBefore(tr, before);
    }
    valuesText(tr.cells[1], t.values);
    const at = new Date(t.lastAt);
    tr.cells[2].textContent = isNaN(at) ? t.lastAt : at.toLocaleDateString() === new Date().toLocaleDateString() ? clock(at) : at.toLocaleString();
    tr.cells[2].title = t.lastAt;
    tr.cells[3].textContent = String(t.count);
    if (fresh) {
      tr.classList.remove("new");
      void tr.offsetWidth; // restart the highlight
      tr.classList.add("new");
    }
  }

  function renderReadings() {
    vui.tbody.replaceChildren();
    for (const name of Array.from(vs.topics.keys()).sort()) renderReading(name, vs.topics.get(name), false);
  }

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // niceTicks returns about n round values that enclose lo and hi.
  function niceTicks(lo, hi, n) {
    const raw = (hi - lo) / n;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((k) => k * p).find((k) => k >= raw) || 10 * p;
    const out = [];
    for (let v = Math.floor(lo / step) * step; v < hi + step; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  const TIME_TICKS = [5, 10, 15, 30, 60, 180, 360, 720, 1440].map((m) => m * 60000);

  function timeLabel(ms, spanMs) {
    const d = new Date(ms);
    if (spanMs > 2 * 86400000) return d.toLocaleDateString(undefined, { weekday: "short", day: "numeric" });
    return two(d.getHours()) + ":" + two(d.getMinutes());
  }

  // drawValues draws a line of averages per topic over the range, ending
  // now, and the legend with each topic's latest reading.
  function drawValues() {
    const box = vui.chart;
    const w = box.clientWidth;
    const h = box.clientHeight;
    box.replaceChildren();
    if (w === 0 || h === 0) return;
    box.setAttribute("viewBox", "0 0 " + w + " " + h);
    const now = Date.now();
    const from = now - vs.rangeMs;
    const topics = Array.from(vs.series.keys()).sort();
    let lo = Infinity;
    let hi = -Infinity;
    const lines = [];
    for (const topic of topics) {
      const pts = vs.series.get(topic).filter((p) => p.t + vs.stepMs > from);
      vs.series.set(topic, pts);
      if (pts.length === 0) continue;
      for (const p of pts) {
        const avg = p.sum / p.count;
        lo = Math.min(lo, avg);
        hi = Math.max(hi, avg);
      }
      lines.push({ topic: topic, pts: pts });
    }
    vui.empty.hidden = lines.length > 0;
    if (lines.length === 0) {
      valuesLegend([]);
      return;
    }
    if (lo === hi) {
      lo -= 1;
      hi += 1;
    }
    const ticks = niceTicks(lo, hi, 4);
    lo = ticks[0];
    hi = ticks[ticks.length - 1];
    let left = 0;
    for (const v of ticks) left = Math.max(left, fmtNumber(v).length * 6.5);
    left = Math.ceil(left) + 8;
    const right = 8, up = 8, bottom = 20;
    const pw = Math.max(1, w - left - right);
    const ph = Math.max(1, h - up - bottom);
    const x = (t) => left + ((t - from) / vs.rangeMs) * pw;
    const y = (v) => up + ph - ((v - lo) / (hi - lo)) * ph;
    for (const v of ticks) {
      const yy = Math.round(y(v)) + 0.5;
      box.appendChild(svg("line", { class: "grid", x1: left, x2: left + pw, y1: yy, y2: yy }));
      box.appendChild(svg("text", { x: left - 4, y: yy + 4, "text-anchor": "end" }, fmtNumber(v)));
    }
    const every = TIME_TICKS.find((m) => vs.rangeMs / m <= 6) || 86400000;
    // Ticks at local round times.
    const offset = new Date(from).getTimezoneOffset() * 60000;
    for (let t = Math.ceil((from - offset) / every) * every + offset; t <= now; t += every) {
      const xx = x(t);
      if (xx < left + 15 || xx > left + pw - 15) continue;
      box.appendChild(svg("text", { x: xx, y: up + ph + 15, "text-anchor": "middle" }, timeLabel(t, vs.rangeMs)));
    }
    lines.forEach((l, k) => {
      const color = COLORS[k % COLORS.length];
      let d = "";
      let prev = -Infinity;
      for (const p of l.pts) {
        const xx = Math.max(left, x(p.t + vs.stepMs / 2)).toFixed(1);
        const yy = y(p.sum / p.count).toFixed(1);
        // A gap of more than three buckets breaks the line.
        d += (p.t - prev > 3 * vs.stepMs ? "M" : "L") + xx + " " + yy + " ";
        prev = p.t;
      }
      const last = l.pts[l.pts.length - 1];
      box.appendChild(svg("path", {
        class: "line", d: d.trim(), stroke: color, "data-topic": l.topic, "data-points": String(l.pts.length), "data-last": String(last.last),
      }));
      if (l.pts.length === 1) {
        box.appendChild(svg("circle", { cx: x(last.t + vs.stepMs / 2), cy: y(last.sum / last.count), r: 2.5, fill: color }));
      }
    });
    valuesLegend(lines);
  }

  function valuesLegend(lines) {
    vui.legend.replaceChildren();
    lines.forEach((l, k) => {
      const li = document.createElement("li");
      li.dataset.topic = l.topic;
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = COLORS[k % COLORS.length];
      li.appendChild(sw);
      li.appendChild(document.createTextNode(l.topic));
      const last = l.pts[l.pts.length - 1].last;
      const r = document.createElement("span");
      r.className = "reading";
      r.textContent = fmtNumber(last);
      r.dataset.last = String(last);
      li.appendChild(r);
      vui.legend.appendChild(li);
    });
  }

  vui.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = vui.filter.value.trim();
    const err = filterError(f);
    vui.filter.setAttribute("aria-invalid", err === "" ? "false" : "true");
    if (err !== "") {
      valuesError(err);
      return;
    }
    if (f !== vs.filter) vs.field = ""; // the new topics' fields pick again
    else vs.field = vui.field.value;
    vs.filter = f;
    const url = new URL(window.location.href);
    if (f === "#") url.searchParams.delete("values");
    else url.searchParams.set("values", f);
    history.replaceState(null, "", url);
    vs.rangeMs = Number(vui.range.value) * 1000;
    loadValues();
  });
  vui.field.addEventListener("change", () => {
    vs.field = vui.field.value;
    loadValues();
  });
  vui.range.addEventListener("change", () => {
    vs.rangeMs = Number(vui.range.value) * 1000;
    loadValues();
  });

  // ---- start ----

  const initial = new URLSearchParams(window.location.search).get("topic");
  if (initial && filterError(initial) === "") {
    ui.filter.value = initial;
  }
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(draw, 100);
  });
  setInterval(draw, 1000);
  setInterval(drawValues, 10000); // the range's end moves on
  window.addEventListener("resize", () => {
    clearTimeout(vs.drawTimer);
    vs.drawTimer = setTimeout(drawValues, 100);
  });
  loadToken();
  ui.tokenForget.hidden = state.token === "";
  pollReady();
  const initialValues = new URLSearchParams(window.location.search).get("values");
  if (initialValues && filterError(initialValues) === "") {
    vui.filter.value = initialValues;
    vs.filter = initialValues;
  }
  // The configuration says whether to ask for a token before any read.
  loadConfig().then(() => {
    applyFilter(ui.filter.value.trim() || "#");
    loadValues();
  });
})();
