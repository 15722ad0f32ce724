// The tenant tail (WebSocket /v1/tail) that keeps every view live. Events are handed to the
// listeners in one batch per animation frame, so 500 events/s cost one render per frame. After
// a drop it resumes from the last cursor; a {"type": "gap"} (that point was trimmed away) tells
// the listeners to reload from the REST API.

const RETRY_MS = [250, 500, 1000, 2000, 5000];
const MAX_PENDING = 20000; // a hidden tab gets no frames: past this, reload instead of replaying

export class TenantTail {
  constructor(token) {
    this.token = token;
    this.cursor = null;
    this.pending = [];
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.failures = 0;
    this.stopped = false;
    this.frame = null;
    this.state = "connecting";
  }

  start() {
    this.#connect();
    return this;
  }

  stop() {
    this.stopped = true;
    if (this.socket) this.socket.close(1000);
    if (this.frame) cancelAnimationFrame(this.frame);
  }

  // listener({events, gap}): events in tail order; gap true when the view must reload.
  listen(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onState(listener) {
    this.stateListeners.add(listener);
    listener(this.state);
    return () => this.stateListeners.delete(listener);
  }

  #setState(state) {
    this.state = state;
    for (const listener of this.stateListeners) listener(state);
  }

  #connect() {
    const url = new URL("/v1/tail", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("token", this.token);
    if (this.cursor) url.searchParams.set("cursor", this.cursor);
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.failures = 0;
      this.#setState("live");
      // Dropped before any event told us where we were: what happened meanwhile cannot be
      // replayed, so the views reload from the REST API as after a gap.
      if (this.opened && !this.cursor) this.#receive({ type: "gap" });
      this.opened = true;
    };
    socket.onmessage = (message) => this.#receive(JSON.parse(message.data));
    socket.onclose = () => {
      this.socket = null;
      if (this.stopped) return;
      this.#setState("reconnecting");
      const wait = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
      this.failures += 1;
      setTimeout(() => this.stopped || this.#connect(), wait);
    };
  }

  #receive(message) {
    if (message.type === "gap") {
      this.pending = [];
      this.gap = true;
    } else if (message.event) {
      this.cursor = message.cursor;
      if (this.pending.length >= MAX_PENDING) {
        this.pending = [];
        this.gap = true;
      } else {
        this.pending.push(message.event);
      }
    }
    if (!this.frame) this.frame = requestAnimationFrame(() => this.#flush());
  }

  #flush() {
    this.frame = null;
    const batch = { events: this.pending, gap: Boolean(this.gap) };
    this.pending = [];
    this.gap = false;
    for (const listener of this.listeners) listener(batch);
  }
}
