// The subscriber's web console: a live view of GET /messages/stream, a
// per-topic rate chart, the broker state and a publish form. Plain script,
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
  async function openStream(after) {
    const gen = state.generation;
    const ctrl = new AbortController();
    state.abort = ctrl;
    setState(ui.streamState, "warn", "stream: connecting");
    let r;
    try {
      r = await fetch(streamURL(after), { headers: auth({ Accept: "text/event-stream" }), cache: "no-store", signal: ctrl.signal });
    } catch (e) {
      if (gen !== state.generation) return;
      setState(ui.streamState, "bad", "stream: subscriber unreachable, retrying");
      reopen(gen, REOPEN_MS);
      return;
    }
    if (gen !== state.generation) {
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
      setState(ui.streamState, "bad", "stream: HTTP " + r.status + ", retrying");
      reopen(gen, wait > 0 ? wait * 1000 : REOPEN_MS);
      return;
    }
    setState(ui.streamState, "ok", "stream: live");
    try {
      await readEvents(gen, r.body);
    } catch (e) {
      // the connection broke: resume below
    }
    if (gen !== state.generation) return;
    setState(ui.streamState, "warn", "stream: reconnecting");
    reopen(gen, state.retryMs);
  }

  // readEvents parses an event stream (the WHATWG rules for the fields
  // this server sends) and hands each event to onEvent.
  async function readEvents(gen, body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== state.generation) {
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
          if (data.length > 0) onEvent(gen, type || "message", data.join("\n"));
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
        else if (field === "retry" && /^\d+$/.test(v)) state.retryMs = Number(v);
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
  loadToken();
  ui.tokenForget.hidden = state.token === "";
  pollReady();
  // The configuration says whether to ask for a token before any read.
  loadConfig().then(() => applyFilter(ui.filter.value.trim() || "#"));
})();
