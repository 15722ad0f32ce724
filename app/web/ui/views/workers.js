// Workers: the live worker processes (GET /v1/workers), with the tenant's runs each is running.
import { ago, h, replace, shortId } from "../dom.js";

const REFRESH_MS = 5000; // heartbeats are not events: a slow refresh shows workers come and go

export function mount(root, ctx) {
  const body = h("tbody");
  const note = h("p", { class: "muted", id: "workers-note" }, "Loading…");
  replace(
    root,
    h("div", { class: "view-head" }, h("h1", {}, "Workers"), note),
    h("div", { class: "table-wrap" }, h("table", { id: "workers-table" },
      h("thead", {}, h("tr", {}, ["Worker", "Host / pid", "Queues", "Concurrency", "Started", "Heartbeat", "Running"].map((t) => h("th", { scope: "col" }, t)))),
      body)),
  );
  async function load() {
    try {
      const { items } = await ctx.api.get("/v1/workers");
      note.textContent = `${items.length} live worker${items.length === 1 ? "" : "s"}`;
      replace(body, items.length ? items.map(row) : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "⚠ No live worker: queued runs will wait.")));
    } catch (error) {
      ctx.fail(error);
    }
  }
  const timer = setInterval(load, REFRESH_MS);
  ctx.onCleanup(() => clearInterval(timer));
  load();
}

function row(w) {
  return h(
    "tr",
    { "data-worker": w.name },
    h("td", { class: "mono" }, w.name),
    h("td", {}, `${w.hostname} / ${w.pid}`),
    h("td", {}, w.queues.map((q) => h("a", { href: `/ui/queues/${encodeURIComponent(q)}`, class: "pill" }, q))),
    h("td", { class: "num" }, String(w.concurrency)),
    h("td", { title: w.started_at }, ago(w.started_at)),
    h("td", { title: w.last_heartbeat }, ago(w.last_heartbeat)),
    h("td", {}, w.running.length ? w.running.map((id) => h("a", { href: `/ui/runs/${id}`, class: "mono pill" }, shortId(id))) : h("span", { class: "muted" }, "idle")),
  );
}
