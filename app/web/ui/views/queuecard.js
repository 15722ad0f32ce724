// One queue as the overview and the queue page show it: counts, pause, limits, live workers,
// the last minutes' throughput and failure rate, and the no-worker warning.
import { STATUS, STATUSES, badge, h } from "../dom.js";

export function needsWorker(queue) {
  return queue.workers === 0 && (queue.counts.queued || 0) > 0;
}

export function queueCard(queue, { heading = "h2" } = {}) {
  const href = `/ui/queues/${encodeURIComponent(queue.name)}`;
  return h(
    "article",
    { class: `card queue${needsWorker(queue) ? " warn" : ""}`, "data-queue": queue.name },
    h(
      "header",
      { class: "queue-head" },
      h(heading, {}, h("a", { href }, queue.name)),
      queue.paused ? h("span", { class: "pill paused" }, "‖ paused") : h("span", { class: "pill active" }, "▶ active"),
    ),
    needsWorker(queue) &&
      h(
        "p",
        { class: "warning", role: "alert", "data-warning": "no-workers" },
        `⚠ ${queue.counts.queued} queued, no live worker serves this queue`,
      ),
    queue.paused && h("p", { class: "note", "data-note": "paused" }, "‖ Paused: running attempts finish, nothing new starts until resumed."),
    counts(queue.counts, new Set(queue.counts_estimated || [])),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Workers"),
      h("dd", { "data-field": "workers" }, String(queue.workers)),
      h("dt", {}, "Limits"),
      h("dd", {}, limitsText(queue.limits)),
    ),
    recent(queue.recent),
  );
}

// Counts past the server's exact limit are the planner's estimates: shown with "≈".
function counts(byStatus, estimated) {
  const total = STATUSES.reduce((sum, status) => sum + (byStatus[status] || 0), 0);
  return h(
    "ul",
    { class: "counts", "aria-label": "Runs by status" },
    [...STATUSES.map((status) =>
      h(
        "li",
        { class: `count status-${status}${byStatus[status] ? "" : " zero"}`, "data-count": status },
        h("span", { class: "n", title: estimated.has(status) ? "an estimate" : null }, `${estimated.has(status) ? "≈" : ""}${(byStatus[status] || 0).toLocaleString()}`),
        h("span", { class: "label" }, h("span", { "aria-hidden": "true" }, STATUS[status].icon, " "), status),
      ),
    ),
    h("li", { class: "count total", "data-count": "total" }, h("span", { class: "n" }, `${estimated.size ? "≈" : ""}${total.toLocaleString()}`), h("span", { class: "label" }, "total"))],
  );
}

export function limitsText(limits) {
  if (!limits) return "none";
  const parts = [];
  if (limits.concurrency) parts.push(`${limits.concurrency} at once`);
  if (limits.rate) parts.push(`${limits.rate.limit} per ${limits.rate.period_s} s`);
  if (limits.key_concurrency) parts.push(`${limits.key_concurrency} at once per key`);
  if (limits.key_rate) parts.push(`${limits.key_rate.limit} per ${limits.key_rate.period_s} s per key`);
  return parts.length ? parts.join(" · ") : "none";
}

// Throughput per minute as bars (succeeded stacked under failed), with the totals in words.
function recent(window) {
  if (!window || !Array.isArray(window.minutes)) {
    return h("p", { class: "muted recent" }, "Throughput: not reported by this server");
  }
  const minutes = window.minutes;
  let done = 0;
  let failed = 0;
  for (const m of minutes) {
    done += (m.succeeded || 0) + (m.failed || 0) + (m.cancelled || 0);
    failed += m.failed || 0;
  }
  const peak = Math.max(1, ...minutes.map((m) => (m.succeeded || 0) + (m.failed || 0) + (m.cancelled || 0)));
  const span = Math.round((window.window_s || minutes.length * 60) / 60);
  const rate = done ? Math.round((100 * failed) / done) : 0;
  const bars = h(
    "div",
    { class: "spark", "aria-hidden": "true" },
    minutes.map((m) => {
      const ok = h("span", { class: "ok" });
      const bad = h("span", { class: "bad" });
      // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy
      ok.style.height = `${(100 * ((m.succeeded || 0) + (m.cancelled || 0))) / peak}%`;
      bad.style.height = `${(100 * (m.failed || 0)) / peak}%`;
      return h("span", { class: "col", title: `${m.at}: ${m.succeeded} ok, ${m.failed} failed` }, bad, ok);
    }),
  );
  return h(
    "div",
    { class: "recent" },
    bars,
    h(
      "p",
      { class: "recent-text", "data-field": "recent" },
      `${done} finished in ${span} min (${(done / span).toFixed(1)}/min) · failure rate `,
      h("strong", { class: rate ? "bad-text" : "" }, `${rate}%`),
    ),
  );
}

export { badge };
