// tether.js: a small browser client for tether's WebSocket protocol v1
// (SPEC sections 5 and 10). No dependencies; load it with a <script> tag and
// use the global TetherClient.
//
//   const client = new TetherClient({
//     url: "ws://gateway:8080/v1/connect",   // or a function returning it
//     token: "eyJ…",                          // or an (async) function, called before every connect
//     onMessage: async (msg) => { … },        // resolve: acked; throw/reject: not acked, redelivered later
//     onState: (state, info) => { … },        // "connecting" | "connected" | "disconnected" | "closed"
//   });
//   client.connect();
//   …
//   client.close();
//
// Messages are handed to onMessage one at a time in arrival order. Ids
// handled successfully are acked in batches and remembered, so a redelivery
// (after a reconnect, or an ack lost with a connection) is acked again
// without calling onMessage. The client sends an application ping every half
// heartbeat and reconnects, with jittered exponential backoff, when nothing
// arrives for 1.5 heartbeats or the connection ends — except after close
// code 4409 (replaced by a newer connection of the same device) and the
// protocol errors 1003, 1007 and 1009, which close it for good.
(function (global) {
  "use strict";

  const SUBPROTOCOL = "tether.v1";
  const MAX_ACK_IDS = 1000;
  // Close codes after which reconnecting cannot help (wire.Retryable).
  const FINAL = new Map([
    [4409, "replaced by a newer connection of the same device"],
    [1003, "binary frame"],
    [1007, "frame is not a JSON object"],
    [1009, "frame too large"],
  ]);

  const DEFAULTS = {
    ackDelayMs: 50, // how long a handled id waits for others to share its ack frame
    ackMax: 100, // queued ids that send an ack frame at once (at most 1000)
    minBackoffMs: 500,
    maxBackoffMs: 30000,
    dedupSize: 10000, // handled ids remembered
    handshakeTimeoutMs: 10000, // open and welcome
    heartbeatMs: 25000, // until a welcome says otherwise
  };

  class TetherClient {
    constructor(options) {
      if (!options || !options.url) throw new Error("TetherClient: url is required");
      if (!options.onMessage) throw new Error("TetherClient: onMessage is required");
      this.options = Object.assign({}, DEFAULTS, options);
      this.options.ackMax = Math.min(Math.max(1, this.options.ackMax), MAX_ACK_IDS);
      this._state = "idle";
      this._ws = null;
      this._welcome = null;
      this._closed = false;
      this._attempt = 0; // connection attempts in a row without a lasting session
      this._timers = new Set();
      this._queue = []; // messages waiting for onMessage
      this._busy = false; // onMessage is running
      this._pending = new Set(); // ids queued or being handled
      this._seen = new Map(); // handled ids, oldest first
      this._acks = []; // handled ids not yet sent
      this._ackTimer = null;
      this._lastRead = 0;
      this._openedAt = 0;
      this.stats = { received: 0, handled: 0, failed: 0, duplicates: 0, acked: 0, reconnects: 0 };
    }

    // state is "idle", "connecting", "connected", "disconnected" or "closed".
    get state() { return this._state; }
    // welcome is the welcome frame of the current session, or null.
    get welcome() { return this._welcome; }

    // connect starts the client; it keeps reconnecting until close().
    connect() {
      if (this._state !== "idle") return;
      this._dial();
    }

    // close ends the client for good: pending acks are sent first when the
    // connection is open.
    close() {
      if (this._closed) return;
      this._closed = true;
      this._flushAcks();
      for (const t of this._timers) clearTimeout(t);
      this._timers.clear();
      const ws = this._ws;
      this._ws = null;
      if (ws) {
        try { ws.close(1000, "client closed"); } catch (e) { /* already closing */ }
      }
      this._setState("closed", { reason: "closed by the client" });
    }

    _later(fn, ms) {
      const t = setTimeout(() => { this._timers.delete(t); fn(); }, ms);
      this._timers.add(t);
      return t;
    }

    _cancel(t) {
      if (t) { clearTimeout(t); this._timers.delete(t); }
    }

    _setState(state, info) {
      this._state = state;
      if (this.options.onState) {
        try { this.options.onState(state, info || {}); } catch (e) { console.error("tether onState:", e); }
      }
    }

    async _resolve(v) {
      return typeof v === "function" ? await v() : v;
    }

    async _dial() {
      if (this._closed) return;
      this._setState("connecting", { attempt: this._attempt + 1 });
      let url;
      try {
        const token = await this._resolve(this.options.token);
        url = connectURL(await this._resolve(this.options.url), token);
      } catch (e) {
        this._retry({ reason: "no token: " + (e && e.message ? e.message : e) });
        return;
      }
      if (this._closed) return;
      let ws;
      try {
        ws = new WebSocket(url, SUBPROTOCOL);
      } catch (e) {
        this._retry({ reason: "bad URL: " + e.message });
        return;
      }
      this._ws = ws;
      this._welcome = null;
      this._openedAt = Date.now();
      this._lastRead = Date.now();
      const handshake = this._later(() => {
        if (this._ws === ws && !this._welcome) ws.close(4000, "handshake timeout");
      }, this.options.handshakeTimeoutMs);
      ws.onmessage = (ev) => { if (this._ws === ws) this._onFrame(ws, ev.data, handshake); };
      ws.onclose = (ev) => { if (this._ws === ws) this._onClose(ev, handshake); };
      ws.onerror = () => { /* onclose follows with the details the browser gives */ };
    }

    _onFrame(ws, data, handshake) {
      this._lastRead = Date.now();
      let f;
      try { f = JSON.parse(data); } catch (e) { return; }
      if (!f || typeof f !== "object") return;
      switch (f.type) {
        case "welcome":
          this._cancel(handshake);
          this._welcome = f;
          this._heartbeat(ws, f.heartbeat_ms > 0 ? f.heartbeat_ms : this.options.heartbeatMs);
          this._setState("connected", { welcome: f });
          if (this.options.onWelcome) this.options.onWelcome(f);
          this._flushAcks();
          break;
        case "message":
          this._onMessage(f);
          break;
        case "error":
          if (this.options.onError) this.options.onError(f);
          break;
        default: // "pong", and frame types of newer servers
      }
    }

    // _heartbeat pings every half heartbeat and drops a connection on which
    // nothing arrived for 1.5 heartbeats.
    _heartbeat(ws, hb) {
      const tick = () => {
        if (this._ws !== ws || this._closed) return;
        if (Date.now() - this._lastRead > hb * 1.5) {
          ws.close(4000, "no answer");
          return;
        }
        this._send(ws, { type: "ping" });
        this._later(tick, hb / 2);
      };
      this._later(tick, hb / 2);
    }

    _onClose(ev, handshake) {
      this._cancel(handshake);
      this._ws = null;
      this._welcome = null;
      if (this._closed) return;
      const info = { code: ev.code, reason: ev.reason || "" };
      if (FINAL.has(ev.code)) {
        this._closed = true;
        info.reason = info.reason || FINAL.get(ev.code);
        this._setState("closed", info);
        return;
      }
      // A session that lasted restarts the backoff; a short one (or a
      // refused handshake, which browsers report as 1006) keeps growing it.
      if (Date.now() - this._openedAt >= this.options.maxBackoffMs) this._attempt = 0;
      this._retry(info);
    }

    _retry(info) {
      if (this._closed) return;
      const ceil = Math.min(this.options.maxBackoffMs, this.options.minBackoffMs * 2 ** Math.min(this._attempt, 30));
      const delay = Math.floor(Math.random() * ceil); // full jitter
      this._attempt++;
      this.stats.reconnects++;
      this._setState("disconnected", Object.assign({ retryInMs: delay }, info));
      this._later(() => this._dial(), delay);
    }

    _onMessage(f) {
      this.stats.received++;
      const id = String(f.id);
      if (this._seen.has(id)) { // handled before: ack again, skip the handler
        this.stats.duplicates++;
        this._ack(id);
        return;
      }
      if (this._pending.has(id)) { // queued already; it is acked once handled
        this.stats.duplicates++;
        return;
      }
      this._pending.add(id);
      this._queue.push({
        id: id,
        target: f.target,
        data: f.data,
        publishedAt: f.published_at ? new Date(f.published_at) : null,
        attempt: f.attempt || 1,
      });
      this._drain();
    }

    async _drain() {
      if (this._busy) return;
      this._busy = true;
      while (this._queue.length > 0 && !this._closed) {
        const msg = this._queue.shift();
        try {
          await this.options.onMessage(msg);
          this.stats.handled++;
          this._remember(msg.id);
          this._ack(msg.id);
        } catch (e) {
          this.stats.failed++; // not acked: the server sends it again
          console.warn("tether: message " + msg.id + " not handled:", e);
        }
        this._pending.delete(msg.id);
      }
      this._busy = false;
    }

    _remember(id) {
      this._seen.set(id, true);
      if (this.options.dedupSize >= 0) {
        while (this._seen.size > this.options.dedupSize) {
          this._seen.delete(this._seen.keys().next().value);
        }
      }
    }

    _ack(id) {
      this._acks.push(id);
      if (this._acks.length >= this.options.ackMax) {
        this._flushAcks();
      } else if (!this._ackTimer) {
        this._ackTimer = this._later(() => { this._ackTimer = null; this._flushAcks(); }, this.options.ackDelayMs);
      }
    }

    // _flushAcks sends the queued acks if a session is open; otherwise they
    // wait for the next welcome (an ack completes a message for the device,
    // whichever connection carries it).
    _flushAcks() {
      const ws = this._ws;
      if (!ws || !this._welcome || ws.readyState !== WebSocket.OPEN) return;
      this._cancel(this._ackTimer);
      this._ackTimer = null;
      while (this._acks.length > 0) {
        const ids = this._acks.splice(0, this.options.ackMax);
        if (!this._send(ws, { type: "ack", ids: ids })) {
          this._acks = ids.concat(this._acks);
          return;
        }
        this.stats.acked += ids.length;
        if (this.options.onAck) this.options.onAck(ids);
      }
    }

    _send(ws, frame) {
      if (ws.readyState !== WebSocket.OPEN) return false;
      try { ws.send(JSON.stringify(frame)); return true; } catch (e) { return false; }
    }
  }

  // connectURL adds /v1/connect when the URL has no path, and the token.
  function connectURL(base, token) {
    const u = new URL(base);
    if (u.pathname === "" || u.pathname === "/") u.pathname = "/v1/connect";
    if (token) u.searchParams.set("token", token);
    return u.toString();
  }

  TetherClient.connectURL = connectURL;
  global.TetherClient = TetherClient;
})(typeof window !== "undefined" ? window : globalThis);
