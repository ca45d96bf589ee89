// dashboard.js: polls /api/stats every second and /api/devices every two,
// and renders them. Plain DOM, no dependencies; charts are inline SVG.
(function () {
  "use strict";

  const STATS_EVERY_MS = 1000;
  const DEVICES_EVERY_MS = 2000;
  const HIDDEN_EVERY_MS = 5000; // while the tab is hidden
  const TIMEOUT_MS = 3000;

  const CLOSE_REASONS = {
    1000: "normal closure",
    1001: "server shutting down",
    1003: "binary frame",
    1007: "frame is not a JSON object",
    1008: "policy violation",
    1009: "frame too large",
    1011: "internal error",
    4401: "token expired",
    4408: "heartbeat timeout",
    4409: "replaced by a newer connection",
    4429: "rate limited",
    4503: "slow consumer",
  };
  // The state of a socket whose peer closed while this side did not: the
  // symptom of a server stuck on something (SPEC section 2).
  const BAD_STATES = new Set(["CLOSE_WAIT"]);

  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat("en-US");

  function text(id, s) {
    const el = $(id);
    if (el && el.textContent !== s) el.textContent = s;
  }

  // ---- formatting ----
  function fmtInt(n) { return n == null ? "—" : nf.format(Math.round(n)); }
  function fmtRate(n) {
    if (n == null) return "—";
    if (n === 0) return "0";
    if (n < 10) return n.toFixed(1);
    return fmtInt(n);
  }
  function fmtDur(s) {
    if (s == null) return "—";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 0.01) return (s * 1e3).toFixed(2) + " ms";
    if (s < 1) return (s * 1e3).toFixed(1) + " ms";
    return s.toFixed(2) + " s";
  }
  function fmtBytes(b) {
    if (b == null) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b.toFixed(0) : b.toFixed(b < 10 ? 2 : 1)) + " " + units[i];
  }
  function fmtSpan(sec) {
    if (sec == null || !isFinite(sec)) return "—";
    sec = Math.max(0, Math.floor(sec));
    const d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d > 0) return d + " d " + h + " h";
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min " + s + " s";
    return s + " s";
  }
  function ago(iso, now) {
    const t = Date.parse(iso);
    return isNaN(t) ? "—" : fmtSpan((now - t) / 1000) + " ago";
  }

  // ---- SVG charts ----
  const SVGNS = "http://www.w3.org/2000/svg";
  function el(name, attrs) {
    const e = document.createElementNS(SVGNS, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  // draw plots series (arrays of numbers or nulls, all of one length) as
  // lines on a shared scale from 0; the first also gets a filled area.
  function draw(svg, series, classes) {
    if (!svg) return;
    const vb = svg.viewBox.baseVal;
    const W = vb.width, H = vb.height, pad = 2;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    let max = 0, n = 0;
    for (const s of series) {
      n = Math.max(n, s.length);
      for (const v of s) if (v != null && v > max) max = v;
    }
    if (n < 2) return;
    if (max <= 0) max = 1;
    const x = (i) => (i / (n - 1)) * W;
    const y = (v) => H - pad - (v / max) * (H - 2 * pad);
    series.forEach((s, k) => {
      const segs = [];
      let cur = [];
      s.forEach((v, i) => {
        if (v == null) { if (cur.length) segs.push(cur); cur = []; return; }
        cur.push([x(i), y(v)]);
      });
      if (cur.length) segs.push(cur);
      for (const seg of segs) {
        const pts = seg.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" ");
        if (k === 0 && seg.length > 1) {
          const area = "M" + seg[0][0].toFixed(1) + "," + H + " L" + pts.replace(/ /g, " L") +
            " L" + seg[seg.length - 1][0].toFixed(1) + "," + H + " Z";
          svg.appendChild(el("path", { d: area, class: "area " + (classes[k] || "") }));
        }
        svg.appendChild(el("polyline", { points: pts, class: "line " + (classes[k] || "") }));
      }
    });
  }

  // ---- rendering ----
  function render(st) {
    document.body.dataset.seq = st.seq;
    text("node", st.node ? "node " + st.node : "");
    text("uptime", st.uptime_s ? fmtSpan(st.uptime_s) : "—");
    text("updated", "live · " + new Date(st.time).toLocaleTimeString());
    $("live").className = "dot ok";

    text("connections", fmtInt(st.connections));
    for (const k of ["published", "delivered", "acked", "redelivered", "expired"]) {
      text("rate-" + k, fmtRate(st.rates[k]));
      text("total-" + k, fmtInt(st.totals[k]));
      draw($("spark-" + k), [st.series[k]], [""]);
    }
    text("total-dead", fmtInt(st.totals.dead));
    draw($("spark-connections"), [st.series.connections], [""]);

    renderLatency(st);
    renderProcess(st);
    renderSockets(st.sockets);
    renderStore(st);
    renderCloses(st.closes);
  }

  function renderLatency(st) {
    const l = st.latency;
    text("lat-p50", fmtDur(l.p50_s));
    text("lat-p99", fmtDur(l.p99_s));
    draw($("spark-latency"), [st.series.p99_s, st.series.p50_s], ["c-p99", "c-p50"]);
    let note;
    if (l.unavailable) {
      note = "tether_delivery_latency_seconds is not exported";
    } else if (l.count > 0) {
      note = fmtInt(l.count) + " deliveries in the last " + fmtSpan(l.window_s);
      if (l.above_max_bucket > 0) note += " · " + fmtInt(l.above_max_bucket) + " over " + fmtDur(l.max_bucket_s);
    } else {
      note = "no deliveries in the last " + fmtSpan(l.window_s);
    }
    if (l.total_count > 0) note += " · since start p50 " + fmtDur(l.total_p50_s) + ", p99 " + fmtDur(l.total_p99_s);
    text("lat-note", note);
  }

  function renderProcess(st) {
    const r = st.runtime;
    text("goroutines", fmtInt(r.goroutines));
    text("resident", fmtBytes(r.resident_bytes));
    draw($("spark-goroutines"), [st.series.goroutines], [""]);
    draw($("spark-resident"), [st.series.resident_bytes], [""]);
    let per = "—";
    if (st.connections > 0 && r.goroutines != null) {
      per = (r.goroutines / st.connections).toFixed(2) + " goroutines";
      if (r.resident_bytes != null) per += ", " + fmtBytes(r.resident_bytes / st.connections);
    }
    text("per-conn", per);
    text("heap", fmtBytes(r.heap_bytes));
    text("threads", fmtInt(r.threads));
    text("fds", r.open_fds == null ? "—" : fmtInt(r.open_fds) + (r.max_fds ? " of " + fmtInt(r.max_fds) : ""));
  }

  function renderSockets(sockets) {
    const box = $("sockets");
    box.replaceChildren();
    if (!sockets) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "tether_tcp_sockets is not exported by this node.";
      box.appendChild(p);
      return;
    }
    const rows = Object.entries(sockets).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const max = Math.max(1, ...rows.map((r) => r[1]));
    for (const [state, n] of rows) {
      const row = document.createElement("div");
      row.className = "barrow" + (BAD_STATES.has(state) && n > 0 ? " bad" : "");
      row.dataset.state = state;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = state;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * n / max).toFixed(1) + "%";
      track.appendChild(fill);
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = fmtInt(n);
      row.append(name, track, num);
      box.appendChild(row);
    }
    if (rows.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "no sockets";
      box.appendChild(p);
    }
  }

  function cells(tr, values, numFrom) {
    values.forEach((v, i) => {
      const td = document.createElement("td");
      if (i >= numFrom) td.className = "num";
      td.textContent = v;
      tr.appendChild(td);
    });
  }

  function emptyRow(tbody, cols, msg) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = cols;
    td.className = "muted";
    td.textContent = msg;
    tr.appendChild(td);
    tbody.appendChild(tr);
  }

  function renderStore(st) {
    const s = st.store;
    const w = fmtSpan(st.latency.window_s);
    const on = s.servers && s.servers.length > 0 ? "on " + s.servers.join(", ") + " · " : "";
    text("store-summary", on + fmtInt(s.errors_total) + " errors · " + fmtRate(s.errors_rate) + "/s · rates over " + w);
    const tb = $("store-ops");
    tb.replaceChildren();
    for (const o of s.ops) {
      const tr = document.createElement("tr");
      if (o.errors > 0) tr.className = "warn";
      cells(tr, [o.op, fmtRate(o.rate), fmtDur(o.p50_s), fmtDur(o.p99_s), fmtDur(o.mean_s), fmtInt(o.errors)], 1);
      tb.appendChild(tr);
    }
    if (s.ops.length === 0) emptyRow(tb, 6, "no store calls yet");
    const errChart = $("spark-store-errors");
    errChart.classList.toggle("off", s.errors_total === 0); // a flat red line alarms for nothing
    draw(errChart, [st.series.store_errors], [""]);

    const errs = $("store-errors");
    errs.replaceChildren();
    if (s.errors.length > 0) {
      const p = document.createElement("p");
      p.className = "errline";
      p.textContent = "errors: " + s.errors.map((e) => e.op + "/" + e.kind + " " + fmtInt(e.total) +
        (e.rate > 0 ? " (" + fmtRate(e.rate) + "/s)" : "")).join(" · ");
      errs.appendChild(p);
    }
    const other = $("store-other");
    other.replaceChildren();
    if (s.other.length > 0) {
      const dl = document.createElement("dl");
      dl.className = "facts";
      for (const m of s.other) {
        const dt = document.createElement("dt");
        dt.textContent = m.name;
        const dd = document.createElement("dd");
        dd.textContent = fmtInt(m.value) + (m.rate != null ? " (" + fmtRate(m.rate) + "/s)" : "");
        dl.append(dt, dd);
      }
      other.appendChild(dl);
    }
  }

  function renderCloses(closes) {
    const tb = $("closes");
    tb.replaceChildren();
    for (const c of closes) {
      const tr = document.createElement("tr");
      cells(tr, [c.code, CLOSE_REASONS[c.code] || "", fmtInt(c.total), fmtRate(c.rate)], 2);
      tb.appendChild(tr);
    }
    if (closes.length === 0) emptyRow(tb, 4, "none");
  }

  function renderDevices(d) {
    text("devices-total", fmtInt(d.total));
    const tb = $("devices");
    tb.replaceChildren();
    const now = Date.now();
    for (const dev of d.devices) {
      const tr = document.createElement("tr");
      tr.dataset.device = dev.id;
      cells(tr, [dev.id, dev.groups.join(", "), ago(dev.connected_at, now), ago(dev.last_seen, now)], 9);
      tb.appendChild(tr);
    }
    if (d.unavailable) emptyRow(tb, 4, "this node does not list its devices");
    else if (d.devices.length === 0) emptyRow(tb, 4, d.prefix ? "no device id starts with " + d.prefix : "no device is connected");
    text("devices-note", d.total > d.devices.length ? "first " + fmtInt(d.devices.length) + " of " + fmtInt(d.total) + " by id" : "");
  }

  // ---- polling ----
  async function getJSON(url) {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    try {
      const resp = await fetch(url, { cache: "no-store", signal: ctl.signal });
      const body = await resp.json();
      if (!resp.ok) throw new Error(body && body.error ? body.error.message : "HTTP " + resp.status);
      return body;
    } finally {
      clearTimeout(t);
    }
  }

  let lastOK = null;
  function showError(e) {
    $("live").className = "dot bad";
    text("updated", lastOK ? "no answer since " + lastOK.toLocaleTimeString() : "no answer");
    const b = $("banner");
    b.hidden = false;
    b.textContent = "Cannot read /api/stats: " + (e && e.name === "AbortError" ? "timed out" : e.message || e);
  }

  function every(ms) { return document.hidden ? HIDDEN_EVERY_MS : ms; }

  async function pollStats() {
    try {
      const st = await getJSON("/api/stats");
      lastOK = new Date();
      $("banner").hidden = true;
      render(st);
    } catch (e) {
      showError(e);
    }
    setTimeout(pollStats, every(STATS_EVERY_MS));
  }

  let devicesTimer = null;
  async function pollDevices() {
    clearTimeout(devicesTimer);
    const prefix = $("device-filter").value.trim();
    try {
      renderDevices(await getJSON("/api/devices?limit=100&prefix=" + encodeURIComponent(prefix)));
    } catch (e) {
      text("devices-note", "cannot list devices: " + (e.message || e));
    }
    devicesTimer = setTimeout(pollDevices, every(DEVICES_EVERY_MS));
  }

  document.addEventListener("DOMContentLoaded", () => {
    let debounce = null;
    $("device-filter").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(pollDevices, 250);
    });
    pollStats();
    pollDevices();
  });
})();
