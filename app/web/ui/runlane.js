// runlane.js — the embeddable part of the dashboard (contract §7), for users' own pages too:
//   import { tailRun } from "https://runlane.example/ui/runlane.js";
//   tailRun(runId, { token, after: 0, onEvent: (event) => ... });   // resumes after a drop
//   <runlane-run run-id="…" token="…"></runlane-run>                  // a live progress card
// Only WebSockets to the runlane origin this file came from: no CORS needed for the API.

const ORIGIN = new URL(import.meta.url).origin;
const TERMINAL = new Set(["run.succeeded", "run.failed", "run.cancelled"]);
const RETRY_MS = [250, 500, 1000, 2000, 5000];

// The WebSocket tail of one run: every event with seq > `after`, in order, once each. After a
// drop it reconnects with `after` = the last seq seen (as the CLI does), so nothing repeats or
// goes missing. It ends when the server closes normally (after the terminal event) or on close().
export function tailRun(runId, { token, after = 0, onEvent, onState, base = ORIGIN } = {}) {
  let last = Number(after) || 0;
  let socket = null;
  let stopped = false;
  let failures = 0;
  const state = (value) => onState && onState(value);

  function connect() {
    const url = new URL(`/v1/runs/${encodeURIComponent(runId)}/tail`, base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("after", String(last));
    if (token) url.searchParams.set("token", token);
    socket = new WebSocket(url);
    socket.onopen = () => {
      failures = 0;
      state("live");
    };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.seq <= last) return; // never twice, whatever a reconnect replays
      last = event.seq;
      if (onEvent) onEvent(event);
    };
    socket.onclose = (close) => {
      socket = null;
      if (stopped) return;
      if (close.code === 1000) {
        state("done"); // the run is terminal and we have its last event
        return;
      }
      state("reconnecting");
      const wait = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
      failures += 1;
      setTimeout(() => stopped || connect(), wait);
    };
  }

  connect();
  return {
    get after() {
      return last;
    },
    close() {
      stopped = true;
      if (socket) socket.close(1000);
    },
  };
}

// What a run's events say about it now: status, progress, last message and an ETA from its own
// progress rate (elapsed since the attempt started, scaled to what is left).
export class RunProgress {
  constructor(run = null) {
    this.status = run ? run.status : null;
    this.percent = run && run.progress ? run.progress.percent : null;
    this.message = run && run.progress ? run.progress.message : null;
    this.startedAt = run && run.started_at ? Date.parse(run.started_at) : null;
    this.eta = run && run.eta ? Date.parse(run.eta) : null;
    this.error = run ? run.error : null;
  }

  apply(event) {
    const data = event.data || {};
    const at = Date.parse(event.at);
    const status = STATUS_AFTER[event.type];
    if (status) this.status = status;
    if (event.type === "run.started") {
      this.startedAt = at;
      this.percent = 0;
      this.eta = null;
    } else if (event.type === "run.progress") {
      this.percent = data.percent;
      this.message = data.message || this.message;
      this.eta = estimate(this.startedAt, at, data.percent) ?? this.eta;
    } else if (event.type === "run.log") {
      this.message = data.message;
    } else if (event.type === "run.failed" || event.type === "run.retrying") {
      this.error = data.error || this.error;
    }
    if (TERMINAL.has(event.type)) {
      this.eta = null;
      if (event.type === "run.succeeded") this.percent = 100;
    }
    return this;
  }
}

// The status a run is in after each event type (contract §2, §5).
export const STATUS_AFTER = {
  "run.queued": "queued",
  "run.delayed": "delayed",
  "run.waiting": "waiting",
  "run.children_done": "queued",
  "run.debounced": "delayed",
  "run.started": "running",
  "run.stalled": "queued",
  "run.retrying": "delayed",
  "run.succeeded": "succeeded",
  "run.failed": "failed",
  "run.cancelled": "cancelled",
};

function estimate(startedAt, at, percent) {
  if (!startedAt || !(percent > 0) || percent >= 100) return null;
  const elapsed = at - startedAt;
  return at + (elapsed * (100 - percent)) / percent;
}

// "in 4 s (12:03:07)", or "—".
export function formatEta(eta, now = Date.now()) {
  if (!eta) return "—";
  const left = Math.max(0, Math.round((eta - now) / 1000));
  const clock = new Date(eta).toLocaleTimeString();
  if (left < 60) return `in ${left} s (${clock})`;
  return `in ${Math.floor(left / 60)} min ${left % 60} s (${clock})`;
}

const ICONS = {
  waiting: "◌", queued: "●", delayed: "◷", running: "▶",
  succeeded: "✓", failed: "✕", cancelled: "⊘",
};

// <runlane-run run-id="…" token="…">: status, a progress bar (role="progressbar"), ETA and the
// last message, live from the run's tail. Styles come from runlane-run.css beside this file (a
// stylesheet link, so it works under a strict Content-Security-Policy too).
export class RunlaneRun extends HTMLElement {
  static observedAttributes = ["run-id", "token"];

  connectedCallback() {
    if (!this.shadowRoot) this.#build();
    this.#start();
  }

  disconnectedCallback() {
    this.#stop();
  }

  attributeChangedCallback() {
    if (this.isConnected && this.shadowRoot) this.#start();
  }

  #build() {
    const root = this.attachShadow({ mode: "open" });
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = new URL("./runlane-run.css", import.meta.url).href;
    const card = document.createElement("div");
    card.className = "card";
    card.setAttribute("part", "card");
    card.innerHTML = `
      <div class="head"><span class="status" part="status"></span><span class="live"></span></div>
      <div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-label="Progress">
        <div class="fill"></div></div>
      <div class="foot"><span class="percent"></span><span class="eta"></span></div>
      <div class="message" part="message"></div>`;
    root.append(css, card);
    this.el = Object.fromEntries(
      ["status", "live", "bar", "fill", "percent", "eta", "message"].map((name) => [
        name,
        card.querySelector(`.${name}`),
      ]),
    );
    this.progress = new RunProgress();
  }

  #start() {
    this.#stop();
    const runId = this.getAttribute("run-id");
    if (!runId) return;
    this.progress = new RunProgress();
    this.#render();
    this.tail = tailRun(runId, {
      token: this.getAttribute("token"),
      onEvent: (event) => {
        this.progress.apply(event);
        this.#render();
        this.dispatchEvent(new CustomEvent("runlane-event", { detail: event }));
      },
      onState: (state) => {
        this.el.live.textContent = state === "live" ? "● live" : state === "done" ? "" : "reconnecting…";
      },
    });
    this.timer = setInterval(() => this.#render(), 1000); // the ETA counts down between events
  }

  #stop() {
    if (this.tail) this.tail.close();
    clearInterval(this.timer);
    this.tail = null;
  }

  #render() {
    const p = this.progress;
    const status = p.status || "loading";
    this.el.status.textContent = `${ICONS[status] || "…"} ${status}`;
    this.el.status.dataset.status = status;
    this.el.bar.dataset.status = status;
    const percent = p.percent ?? 0;
    this.el.bar.setAttribute("aria-valuenow", String(percent));
    this.el.bar.setAttribute("aria-valuetext", `${percent}%`);
    this.el.fill.style.width = `${percent}%`;
    this.el.percent.textContent = `${percent}%`;
    this.el.eta.textContent = p.eta ? `ETA ${formatEta(p.eta)}` : "";
    this.el.message.textContent = (p.error && p.status === "failed" ? p.error.message : p.message) || "";
  }
}

if (!customElements.get("runlane-run")) customElements.define("runlane-run", RunlaneRun);
