// demo.js: the demo device page. It gets a device token from this admin
// listener, connects to the gateway with TetherClient, shows messages as
// they arrive and acks them. Query parameters prefill the form:
// ?device=demo-1&groups=shop-1,shop-2&url=ws://host:8080/v1/connect&connect=1
(function () {
  "use strict";

  const MAX_ROWS = 200;
  const $ = (id) => document.getElementById(id);

  let client = null;
  let gatewayURL = "";
  const rows = new Map(); // message id → <li>

  async function fetchToken(device, groups) {
    const resp = await fetch("/demo/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ device: device, groups: groups }),
      cache: "no-store",
    });
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      throw new Error(body && body.error ? body.error.message : "HTTP " + resp.status);
    }
    gatewayURL = body.url;
    return body.token;
  }

  function setState(state, info) {
    const el = $("state");
    el.textContent = state;
    el.className = "state " + state;
    let s = "";
    if (state === "disconnected") {
      s = (info.code ? "closed " + info.code : "") + (info.reason ? " " + info.reason : "");
      if (info.retryInMs != null) s += " · retry in " + (info.retryInMs / 1000).toFixed(1) + " s";
    } else if (state === "closed") {
      s = (info.code ? info.code + " " : "") + (info.reason || "");
    } else if (state === "connecting") {
      s = "attempt " + info.attempt;
    } else if (state === "connected" && info.welcome) {
      s = "as " + info.welcome.device + (info.welcome.groups.length ? " in " + info.welcome.groups.join(", ") : "");
    }
    $("state-info").textContent = s;
    const live = state !== "closed";
    $("connect").disabled = live;
    $("disconnect").disabled = !live;
    counters();
  }

  function counters() {
    if (!client) return;
    for (const k of ["received", "acked", "duplicates", "reconnects"]) $(k).textContent = String(client.stats[k]);
  }

  function show(m) {
    $("hint").hidden = true;
    let li = rows.get(m.id);
    if (!li) {
      li = document.createElement("li");
      li.dataset.id = m.id;
      const meta = document.createElement("div");
      meta.className = "meta";
      for (const cls of ["at", "id", "target", "attempt", "status"]) {
        const span = document.createElement("span");
        span.className = cls;
        meta.appendChild(span);
      }
      const pre = document.createElement("pre");
      li.append(meta, pre);
      rows.set(m.id, li);
      const list = $("messages");
      list.insertBefore(li, list.firstChild);
      while (list.children.length > MAX_ROWS) {
        const last = list.lastChild;
        rows.delete(last.dataset.id);
        list.removeChild(last);
      }
    }
    li.querySelector(".at").textContent = new Date().toLocaleTimeString();
    li.querySelector(".id").textContent = m.id;
    li.querySelector(".target").textContent = m.target;
    li.querySelector(".attempt").textContent = "attempt " + m.attempt;
    li.querySelector(".status").textContent = "received";
    li.querySelector("pre").textContent = JSON.stringify(m.data, null, 2);
    counters();
  }

  function markAcked(ids) {
    for (const id of ids) {
      const li = rows.get(id);
      if (!li) continue;
      li.classList.add("acked");
      li.querySelector(".status").textContent = "acked ✓";
    }
    counters();
  }

  function connect(ev) {
    if (ev) ev.preventDefault();
    if (client) client.close();
    const device = $("device").value.trim();
    const groups = $("groups").value.split(",").map((g) => g.trim()).filter((g) => g !== "");
    const override = $("url").value.trim();
    $("hint-cmd").textContent = "tether publish --target device:" + device + " --data '{\"hello\":\"world\"}'";
    client = new TetherClient({
      token: () => fetchToken(device, groups),
      url: () => {
        const u = override || gatewayURL;
        if (!u) throw new Error("the node does not know its gateway URL: fill it in");
        $("gateway").textContent = u;
        return u;
      },
      onMessage: show,
      onAck: markAcked,
      onState: setState,
      onWelcome: (w) => { $("welcome-node").textContent = w.node; },
      onError: (f) => { $("state-info").textContent = "error frame: " + f.code + " " + f.message; },
    });
    window.demoClient = client; // for the console and for tests
    client.connect();
  }

  function disconnect() {
    if (client) client.close();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("origin").textContent = location.origin;
    const q = new URLSearchParams(location.search);
    if (q.has("device")) $("device").value = q.get("device");
    if (q.has("groups")) $("groups").value = q.get("groups");
    if (q.has("url")) $("url").value = q.get("url");
    $("form").addEventListener("submit", connect);
    $("disconnect").addEventListener("click", disconnect);
    if (q.get("connect") === "1") connect();
  });
})();
