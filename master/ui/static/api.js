// The data the pages show: the live state (following GET /api/v1/events) or the state at a past log index
// (GET /api/drover/history/state, replayed from this replica's store).

export class HttpError extends Error {
  constructor(status, text) {
    super(`${status}: ${text.trim()}`);
    this.status = status;
    this.text = text.trim();
  }
}

export async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store", redirect: "manual" });
  if (r.type === "opaqueredirect") throw new HttpError(307, "answered by the leader");
  if (!r.ok) throw new HttpError(r.status, await r.text());
  return r.json();
}

// The RecordIO framing of the event stream: `<byte length>\n<json>`, records split anywhere across chunks.
async function* records(body) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
    for (;;) {
      const nl = buf.indexOf(10);
      if (nl < 0) break;
      const len = parseInt(dec.decode(buf.subarray(0, nl)), 10);
      if (!(len >= 0)) throw new Error("bad RecordIO framing");
      if (buf.length < nl + 1 + len) break;
      yield JSON.parse(dec.decode(buf.subarray(nl + 1, nl + 1 + len)));
      buf = buf.slice(nl + 1 + len);
    }
  }
}

const REFETCH_MS = 1000; // at most one state refetch a second, however busy the stream

export class Cluster extends EventTarget {
  constructor() {
    super();
    this.first = 1;
    this.last = 0; // the last log index this replica's store (the event stream) has
    this.lastTs = null;
    this.at = null; // null: live; else the index the pages show
    this.state = null;
    this.stateIndex = 0;
    this.source = "";
    this.connected = false;
    this.error = null;
    this._pending = null;
    this._lastFetch = 0;
    this._gen = 0;
  }

  get live() {
    return this.at === null;
  }

  async start() {
    try {
      const r = await getJSON("/api/drover/history/range");
      this.first = r.first || 1;
      this.last = r.last;
      this.lastTs = r.last_ts;
    } catch (e) {
      this.error = `history: ${e.message}`;
    }
    this._emit("tick");
    await this.refresh();
    this._follow();
  }

  // Show the state at `index` (a number), or live (null).
  async travel(index) {
    this.at = index === null ? null : Math.max(this.first, Math.min(index, this.last));
    this._emit("tick");
    await this.refresh();
  }

  async refresh() {
    const gen = ++this._gen;
    try {
      let out;
      if (this.live) out = await this._liveState();
      else {
        const st = await getJSON(`/api/drover/history/state?index=${this.at}`);
        out = { state: st, index: this.at, source: `replayed from this replica's store` };
      }
      if (gen !== this._gen) return; // a newer request (the scrubber moved on) wins
      this.state = out.state;
      this.stateIndex = out.index;
      this.source = out.source;
      this.error = null;
    } catch (e) {
      if (gen !== this._gen) return;
      this.error = e.message;
    }
    this._emit("change");
  }

  async _liveState() {
    // The leader answers /master/state (filtered for the reader); a follower redirects there, so it shows the
    // state folded from its own store at the last index it has (the same shape).
    try {
      const [st, roles] = await Promise.all([getJSON("/master/state"), getJSON("/roles")]);
      st.roles = roles.roles;
      return { state: st, index: this.last, source: "live: /master/state of the leader" };
    } catch (e) {
      if (!(e instanceof HttpError) || ![307, 503].includes(e.status) || this.last < 1) throw e;
      const st = await getJSON(`/api/drover/history/state?index=${this.last}`);
      return { state: st, index: this.last, source: "live: this replica's store" };
    }
  }

  _schedule() {
    if (!this.live || this._pending) return;
    const wait = Math.max(0, this._lastFetch + REFETCH_MS - Date.now());
    this._pending = setTimeout(async () => {
      this._lastFetch = Date.now();
      try {
        await this.refresh();
      } finally {
        this._pending = null;
      }
    }, wait);
  }

  async _follow() {
    for (;;) {
      try {
        const r = await fetch(`/api/v1/events?from=${this.last + 1}`, { cache: "no-store" });
        if (!r.ok) throw new HttpError(r.status, await r.text());
        this.connected = true;
        this._emit("tick");
        for await (const rec of records(r.body)) {
          if (rec.type === "HEARTBEAT" || typeof rec.index !== "number") continue;
          this.last = rec.index;
          this.lastTs = rec.ts;
          this._emit("tick");
          this._emit("event", rec);
          this._schedule();
        }
      } catch (e) {
        if (e instanceof HttpError && e.status === 403) return this._poll(); // the log is for readers of all
        this.error = `event stream: ${e.message}`;
      }
      this.connected = false;
      this._emit("tick");
      await new Promise((res) => setTimeout(res, 2000)); // then resume where it stopped (from=last+1)
    }
  }

  // A principal that may not read the whole log (the event stream's 403) still gets /master/state, as the ACLs
  // filter it: fetched every few seconds instead of on events.
  async _poll() {
    this.connected = false;
    this.polling = true;
    this._emit("tick");
    for (;;) {
      await new Promise((res) => setTimeout(res, 5000));
      if (this.live) await this.refresh();
    }
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
