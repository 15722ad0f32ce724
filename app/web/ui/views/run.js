// One run: its fields, input, result, error, why it waits, children as a tree, a live progress
// bar with ETA and the event timeline as it grows. Live from the run's own tail (tailRun of
// runlane.js, the file users embed), first painted from the REST API.
import { RunProgress, formatEta, tailRun } from "../runlane.js";
import { TERMINAL, badge, duration, h, json, perFrame, replace, shortId, throttle, time, toast } from "../dom.js";
import { childrenTree } from "./children.js";

const EVENT_PAGE = 1000;
const MAX_HISTORY = 10000;

export function mount(root, ctx) {
  const [id] = ctx.params;
  let run = null;
  let progress = null;
  let tail = null;
  let lastSeq = 0;
  const pending = [];

  const head = h("div", { class: "view-head run-head" }, h("h1", {}, `Run ${shortId(id)}`));
  const actions = h("div", { class: "actions", id: "run-actions" });
  const bar = h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0, "aria-label": "Progress", id: "run-progress" }, h("div", { class: "fill" }));
  const percent = h("span", { class: "percent", id: "run-percent" }, "0%");
  const eta = h("span", { class: "eta", id: "run-eta" }, "");
  const message = h("p", { class: "message", id: "run-message" });
  const progressCard = h("section", { class: "card progress", "aria-label": "Progress" }, h("div", { class: "progress-top" }, percent, eta), bar, message);
  const waiting = h("div", { id: "run-waiting" });
  const fields = h("dl", { class: "facts wide", id: "run-fields" });
  const data = h("div", { class: "panels", id: "run-data" });
  const children = h("section", { class: "card", id: "run-children", hidden: true });
  const timeline = h("ol", { class: "timeline", id: "timeline", "aria-live": "off" });
  const count = h("span", { class: "muted", id: "timeline-count" });
  replace(
    root,
    h("p", { class: "crumbs" }, h("a", { href: "/ui/runs" }, "Runs"), " / ", h("span", { class: "mono" }, id)),
    head, actions, progressCard, waiting,
    h("div", { class: "columns" },
      h("div", {}, h("section", { class: "card" }, h("h2", {}, "Fields"), fields), data, children),
      h("section", { class: "card" }, h("h2", {}, "Timeline ", count), timeline)),
  );

  function render() {
    replace(head, h("h1", {}, `Run ${shortId(run.id)}`), badge(run.status), h("span", { class: "mono muted" }, run.task));
    head.dataset.status = run.status;
    replace(
      actions,
      h("button", { type: "button", id: "cancel", disabled: TERMINAL.has(run.status), onclick: () => act("cancel") }, "⊘ Cancel"),
      h("button", { type: "button", id: "retry", disabled: !["failed", "cancelled"].includes(run.status), onclick: () => act("retry") }, "↻ Retry"),
    );
    replace(waiting, run.waiting ? waitingBox(run.waiting) : null);
    replace(fields, facts(run));
    replace(
      data,
      panel("Input", json(run.input)),
      run.result !== null && panel("Result", json(run.result), "run-result"),
      run.error && panel("Error", h("p", { class: "bad-text" }, h("strong", {}, run.error.type), ": ", run.error.message), "run-error"),
      Object.keys(run.metadata || {}).length > 0 && panel("Metadata", json(run.metadata)),
    );
    renderProgress();
  }

  function renderProgress() {
    const value = progress.percent ?? 0;
    bar.setAttribute("aria-valuenow", String(value));
    bar.setAttribute("aria-valuetext", `${value}%`);
    bar.querySelector(".fill").style.width = `${value}%`;
    bar.dataset.status = progress.status;
    percent.textContent = `${value}%`;
    eta.textContent = progress.status === "running" && progress.eta ? `ETA ${formatEta(progress.eta)}` : "";
    message.textContent = progress.message || (progress.percent === null ? idle(progress.status) : "");
  }

  const flush = perFrame(() => {
    const items = pending.splice(0);
    for (const event of items) {
      progress.apply(event);
      timeline.prepend(eventItem(event));
    }
    count.textContent = `(${timeline.childElementCount})`;
    renderProgress();
    if (items.some((e) => e.type !== "run.progress" && e.type !== "run.log")) refresh();
  });

  const refresh = throttle(async () => {
    try {
      run = await ctx.api.get(`/v1/runs/${id}`);
      const live = progress;
      progress = new RunProgress(run);
      // what the events said is newer than the row when the row has no eta of its own
      if (!run.eta && live) progress.eta = live.eta;
      render();
      loadChildren();
      if (!TERMINAL.has(run.status) && !tail) follow();
    } catch (error) {
      ctx.fail(error);
    }
  }, 500);

  function follow() {
    tail = tailRun(id, {
      token: ctx.api.token(),
      after: lastSeq,
      onEvent: (event) => {
        lastSeq = event.seq;
        pending.push(event);
        flush();
      },
      onState: (state) => {
        if (state === "done") tail = null;
      },
    });
  }

  async function act(action) {
    try {
      run = await ctx.api.post(`/v1/runs/${id}/${action}`);
      progress.status = run.status;
      render();
      toast(action === "cancel" ? "Cancel requested." : "Run queued again.");
      if (!tail) follow();
    } catch (error) {
      ctx.fail(error);
    }
  }

  async function loadChildren() {
    if (!run.children) return;
    children.hidden = false;
    try {
      replace(children, h("h2", {}, `Children (${run.children.total})`), childSummary(run.children), await childrenTree(ctx.api, run.id));
    } catch (error) {
      ctx.fail(error);
    }
  }

  async function first() {
    try {
      run = await ctx.api.get(`/v1/runs/${id}`);
    } catch (error) {
      if (error.status === 404) return replace(root, h("h1", {}, "No such run"), h("p", {}, "This tenant has no run ", h("span", { class: "mono" }, id), "."));
      return ctx.fail(error);
    }
    progress = new RunProgress(run);
    render();
    loadChildren();
    try {
      const events = await history();
      const replay = new RunProgress(run);
      for (const event of events) replay.apply(event);
      progress.startedAt = replay.startedAt; // for the ETA from the progress rate
      replace(timeline, events.reverse().map(eventItem));
      count.textContent = `(${events.length})`;
      lastSeq = events.length ? events[0].seq : 0;
    } catch (error) {
      ctx.fail(error);
    }
    follow();
  }

  async function history() {
    const all = [];
    for (;;) {
      const { items } = await ctx.api.get(`/v1/runs/${id}/events?after=${lastSeq}&limit=${EVENT_PAGE}`);
      all.push(...items);
      if (items.length) lastSeq = items[items.length - 1].seq;
      if (items.length < EVENT_PAGE || all.length >= MAX_HISTORY) return all;
    }
  }

  const ticker = setInterval(() => progress && renderProgress(), 1000); // the ETA counts down
  ctx.onCleanup(() => {
    clearInterval(ticker);
    if (tail) tail.close();
  });
  first();
}

function idle(status) {
  if (TERMINAL.has(status)) return "No progress was reported.";
  return status === "running" ? "" : "Not started yet.";
}

function facts(run) {
  const t = run.timings || {};
  const rows = [
    ["Id", h("span", { class: "mono", id: "run-id" }, run.id)],
    ["Status", badge(run.status)],
    ["Task", h("span", { class: "mono" }, run.task)],
    ["Queue", h("a", { href: `/ui/queues/${encodeURIComponent(run.queue)}` }, run.queue)],
    ["Attempt", `${run.attempt} of ${run.max_attempts}`],
    ["Priority", String(run.priority)],
    ["Created", time(run.created_at)],
    ["Scheduled for", time(run.scheduled_for)],
    ["Started", time(run.started_at)],
    ["Finished", time(run.finished_at)],
    ["ETA", run.eta ? time(run.eta) : "—"],
    ["Timings", timings(t)],
    ["Parent", run.parent_id ? h("a", { href: `/ui/runs/${run.parent_id}`, class: "mono" }, shortId(run.parent_id)) : "—"],
    ["Idempotency key", run.idempotency_key || "—"],
    ["Dedupe key", run.dedupe_key || "—"],
    ["Limit key", run.limit_key || "—"],
  ];
  return rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]);
}

// Milliseconds from created_at to each step the run has reached (contract §6).
function timings(t) {
  const steps = [["queued", t.queued_ms], ["started", t.started_ms], ["finished", t.finished_ms]];
  const reached = steps.filter(([, ms]) => ms !== null && ms !== undefined);
  return reached.length ? reached.map(([name, ms]) => `${name} +${duration(ms)}`).join(" · ") : "—";
}

function waitingBox(waiting) {
  return h(
    "p",
    { class: "card waiting", "data-reason": waiting.reason },
    h("strong", {}, "◌ Why it waits: "),
    `${waiting.reason.replaceAll("_", " ")}`,
    waiting.detail ? ` — ${waiting.detail}` : "",
    waiting.until ? [" (until ", time(waiting.until), ")"] : "",
  );
}

function childSummary(c) {
  return h("p", { class: "muted" }, `${c.succeeded} succeeded · ${c.failed} failed · ${c.cancelled} cancelled · ${c.pending} pending`);
}

function panel(title, body, id) {
  return h("section", { class: "card", id }, h("h2", {}, title), body);
}

function eventItem(event) {
  return h(
    "li",
    { class: `event ev-${event.type.replace("run.", "")}`, "data-seq": event.seq },
    h("span", { class: "seq" }, `#${event.seq}`),
    h("span", { class: "type" }, event.type),
    h("time", { datetime: event.at, title: event.at }, new Date(event.at).toLocaleTimeString()),
    h("span", { class: "data" }, summary(event)),
  );
}

function summary(event) {
  const d = event.data || {};
  switch (event.type) {
    case "run.progress": return `${d.percent}%${d.message ? ` — ${d.message}` : ""}`;
    case "run.log": return `[${d.level}] ${d.message}`;
    case "run.started": return `attempt ${d.attempt} on ${d.worker}`;
    case "run.failed": case "run.retrying": return d.error ? `${d.error.type}: ${d.error.message}` : "";
    case "run.cancelled": return d.reason || "";
    default: return Object.keys(d).length ? JSON.stringify(d) : "";
  }
}
