// Overview: every queue of the tenant at a glance. First paint from GET /v1/queues; the tail's
// events trigger a reload (at most one a second), and a slow refresh notices workers that come
// and go (their heartbeats are not events).
import { h, replace, throttle } from "../dom.js";
import { needsWorker, queueCard } from "./queuecard.js";

const WORKERS_REFRESH_MS = 10000;

export function mount(root, ctx) {
  const grid = h("div", { class: "grid", id: "queues", "aria-live": "polite" });
  const summary = h("p", { class: "muted", id: "overview-summary" }, "Loading queues…");
  replace(root, h("div", { class: "view-head" }, h("h1", {}, "Overview"), summary), grid);

  async function load() {
    try {
      const { items } = await ctx.api.get("/v1/queues");
      const warned = items.filter(needsWorker).length;
      summary.textContent =
        `${items.length} queue${items.length === 1 ? "" : "s"}` +
        (warned ? ` · ⚠ ${warned} without a live worker` : "");
      replace(grid, items.length ? items.map((q) => queueCard(q)) : h("p", { class: "empty" }, "No queues yet: submit a run."));
    } catch (error) {
      ctx.fail(error);
    }
  }
  const reload = throttle(load, 1000);
  ctx.listen(({ events, gap }) => (gap || events.length) && reload());
  const timer = setInterval(load, WORKERS_REFRESH_MS);
  ctx.onCleanup(() => clearInterval(timer));
  load();
}
