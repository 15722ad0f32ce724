// Runs: the list filtered by status, queue and task, searchable by id, idempotency key or dedupe
// key, paged by next_cursor; new runs appear live. Bulk cancel and retry act on the server on
// every run the filter matches (POST /v1/runs/cancel|retry), not by looping here.
import { STATUSES, h, replace, throttle, toast } from "../dom.js";
import { RunTable } from "./runtable.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FIRST_EVENTS = new Set(["run.queued", "run.delayed", "run.waiting"]);

export function mount(root, ctx, { fixedQueue = null, title = "Runs" } = {}) {
  const filter = {
    status: ctx.search.get("status") || "",
    queue: fixedQueue || ctx.search.get("queue") || "",
    task: ctx.search.get("task") || "",
    q: ctx.search.get("q") || "",
  };
  const table = new RunTable();
  const more = h("button", { type: "button", id: "more", hidden: true }, "Load more");
  const note = h("p", { class: "muted", id: "runs-note" });
  const bulk = h("div", { class: "bulk", id: "bulk" });
  let cursor = null;

  const status = h("select", { id: "f-status", name: "status" }, h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s, selected: s === filter.status }, s)));
  const queue = h("input", { id: "f-queue", name: "queue", value: filter.queue, placeholder: "any queue", disabled: Boolean(fixedQueue), list: "queue-names" });
  const queues = h("datalist", { id: "queue-names" });
  const task = h("select", { id: "f-task", name: "task" }, h("option", { value: "" }, "any task"));
  const search = h("input", { id: "f-q", name: "q", type: "search", value: filter.q, placeholder: "run id, idempotency or dedupe key" });
  const form = h(
    "form",
    { class: "filters", id: "filters", role: "search" },
    field("Status", status), fixedQueue ? null : field("Queue", queue), field("Task", task), field("Search", search, "wide"),
    h("button", { type: "submit" }, "Apply"),
    queues,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filter, { status: status.value, queue: fixedQueue || queue.value.trim(), task: task.value, q: search.value.trim() });
    if (!fixedQueue) ctx.navigate(`/ui/runs${ctx.api.query({ status: filter.status, queue: filter.queue, task: filter.task, q: filter.q })}`, { replace: true });
    load();
  });
  status.addEventListener("change", () => form.requestSubmit());
  task.addEventListener("change", () => form.requestSubmit());

  replace(root, fixedQueue ? h("h2", {}, title) : h("div", { class: "view-head" }, h("h1", {}, title)), form, bulk, note, table.el, more);
  ctx.api.get("/v1/tasks").then(({ items }) => {
    for (const t of items) task.append(h("option", { value: t.name, selected: t.name === filter.task }, t.name));
  }, ctx.fail);
  if (!fixedQueue) {
    ctx.api.get("/v1/queues").then(({ items }) => queues.append(...items.map((q) => h("option", { value: q.name }))), ctx.fail);
  }

  function params(extra = {}) {
    return ctx.api.query({ status: filter.status, queue: filter.queue, task: filter.task, limit: 50, ...extra });
  }

  async function load() {
    renderBulk();
    try {
      if (filter.q) return await find(filter.q);
      const page = await ctx.api.get(`/v1/runs${params()}`);
      table.set(page.items);
      cursor = page.next_cursor;
      more.hidden = !cursor;
      note.textContent = "";
    } catch (error) {
      ctx.fail(error);
    }
  }

  // An id opens as one row; a key is looked up as an idempotency and as a dedupe key. Items are
  // checked here too, so a server without those filters shows no unrelated runs.
  async function find(q) {
    more.hidden = true;
    if (UUID.test(q)) {
      try {
        table.set([await ctx.api.get(`/v1/runs/${q}`)]);
        note.textContent = "";
      } catch (error) {
        if (error.status !== 404) throw error;
        table.set([]);
        note.textContent = "No run has this id.";
      }
      return;
    }
    const [byKey, byDedupe] = await Promise.all([
      ctx.api.get(`/v1/runs${params({ idempotency_key: q })}`),
      ctx.api.get(`/v1/runs${params({ dedupe_key: q })}`),
    ]);
    const matching = [...byKey.items, ...byDedupe.items].filter((r) => r.idempotency_key === q || r.dedupe_key === q);
    const items = [...new Map(matching.map((r) => [r.id, r])).values()];
    table.set(items);
    note.textContent = items.length ? "" : "No run has this idempotency or dedupe key.";
  }

  more.addEventListener("click", async () => {
    try {
      const page = await ctx.api.get(`/v1/runs${params({ cursor })}`);
      table.add(page.items);
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      ctx.fail(error);
    }
  });

  // New runs: their first page again, merged on top (at most twice a second).
  const newest = throttle(async () => {
    try {
      const page = await ctx.api.get(`/v1/runs${params()}`);
      table.add(page.items.filter((r) => !table.rows.has(r.id)), { first: true });
    } catch (error) {
      ctx.fail(error);
    }
  }, 500);
  ctx.listen(({ events, gap }) => {
    if (gap) return load();
    const unknown = table.apply(events);
    if (filter.q) return;
    const fresh = events.some((e) => unknown.has(e.run_id) && FIRST_EVENTS.has(e.type) && e.seq === 1);
    if (fresh) newest();
  });

  function renderBulk() {
    const words = [filter.status, filter.queue && `queue ${filter.queue}`, filter.task && `task ${filter.task}`].filter(Boolean);
    const scope = filter.q ? "the runs shown" : words.length ? `every run matching ${words.join(", ")}` : "every run";
    replace(
      bulk,
      h("span", { class: "muted" }, "Act on ", h("strong", {}, scope), ":"),
      h("button", { type: "button", id: "bulk-cancel", onclick: () => confirmBulk("cancel", scope) }, "Cancel all…"),
      h("button", { type: "button", id: "bulk-retry", onclick: () => confirmBulk("retry", scope) }, "Retry all…"),
    );
  }

  function confirmBulk(action, scope) {
    const yes = h("button", { type: "button", class: "danger", id: "bulk-confirm", onclick: () => runBulk(action) }, `Yes, ${action} ${scope}`);
    replace(bulk, h("span", { role: "alert" }, `${action === "cancel" ? "Cancel" : "Retry"} ${scope}?`), yes, h("button", { type: "button", onclick: renderBulk }, "No"));
    yes.focus();
  }

  async function runBulk(action) {
    const body = filter.q
      ? { ids: table.ids }
      : Object.fromEntries(Object.entries({ status: filter.status, queue: filter.queue, task: filter.task }).filter(([, v]) => v));
    try {
      const { matched, changed } = await ctx.api.post(`/v1/runs/${action}`, body);
      toast(`${action === "cancel" ? "Cancelled" : "Retried"} ${changed} of ${matched} matching run${matched === 1 ? "" : "s"}.`);
    } catch (error) {
      if (error.status === 404 || error.status === 405) toast("This server has no bulk cancel/retry yet.", "error");
      else ctx.fail(error);
    }
    load();
  }

  load();
}

function field(label, input, extra = "") {
  return h("label", { class: `field ${extra}` }, h("span", {}, label), input);
}
