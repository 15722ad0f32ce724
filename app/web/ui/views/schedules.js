// Schedules: the tenant's cron and interval schedules; create and delete (GET/POST/DELETE
// /v1/schedules).
import { ago, h, json, replace, time, toast } from "../dom.js";

export function mount(root, ctx) {
  const body = h("tbody");
  const task = h("select", { id: "s-task", name: "task", required: true });
  const kind = h("select", { id: "s-kind", name: "kind" }, h("option", { value: "every_s" }, "every (seconds)"), h("option", { value: "cron" }, "cron expression"));
  const form = h(
    "form",
    { class: "card", id: "schedule-form" },
    h("h2", {}, "New schedule"),
    h("div", { class: "row" },
      field("Name", h("input", { id: "s-name", name: "name", required: true, pattern: "[A-Za-z0-9_.\\-]+", placeholder: "nightly-report" })),
      field("Task", task),
      field("Queue", h("input", { id: "s-queue", name: "queue", placeholder: "the task's" })),
      field("Trigger", kind),
      field("Every / cron", h("input", { id: "s-when", name: "when", required: true, placeholder: "60 or 0 3 * * *" })),
    ),
    field("Input (JSON)", h("textarea", { id: "s-input", name: "input", rows: 2, placeholder: "{}" }), "wide"),
    h("button", { type: "submit", class: "primary", id: "s-create" }, "Create schedule"),
  );
  replace(
    root,
    h("div", { class: "view-head" }, h("h1", {}, "Schedules")),
    h("div", { class: "table-wrap" }, h("table", { id: "schedules-table" },
      h("thead", {}, h("tr", {}, ["Name", "Task", "Queue", "Trigger", "Next firing", "Input", ""].map((t) => h("th", { scope: "col" }, t)))),
      body)),
    form,
  );

  async function load() {
    try {
      const { items } = await ctx.api.get("/v1/schedules");
      replace(body, items.length ? items.map(row) : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No schedules.")));
    } catch (error) {
      ctx.fail(error);
    }
  }

  function row(s) {
    return h(
      "tr",
      { "data-schedule": s.name },
      h("td", { class: "mono" }, s.name),
      h("td", { class: "mono" }, s.task),
      h("td", {}, s.queue || h("span", { class: "muted" }, "task's")),
      h("td", {}, s.cron ? h("code", {}, s.cron) : `every ${s.every_s} s`),
      h("td", {}, time(s.next_fire_at), h("span", { class: "muted" }, ` (${ago(s.next_fire_at)})`)),
      h("td", {}, json(s.input)),
      h("td", {}, h("button", { type: "button", class: "danger", "aria-label": `Delete schedule ${s.name}`, onclick: () => remove(s.name) }, "Delete")),
    );
  }

  async function remove(name) {
    try {
      await ctx.api.del(`/v1/schedules/${encodeURIComponent(name)}`);
      toast(`Schedule ${name} deleted.`);
      load();
    } catch (error) {
      ctx.fail(error);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    let input = null;
    try {
      input = value("s-input") ? JSON.parse(value("s-input")) : null;
    } catch {
      return toast("Input is not valid JSON.", "error");
    }
    const schedule = { name: value("s-name"), task: task.value, input };
    if (value("s-queue")) schedule.queue = value("s-queue");
    if (kind.value === "cron") schedule.cron = value("s-when");
    else schedule.every_s = Number(value("s-when"));
    try {
      await ctx.api.post("/v1/schedules", schedule);
      toast(`Schedule ${schedule.name} saved.`);
      form.reset();
      load();
    } catch (error) {
      ctx.fail(error);
    }
  });

  ctx.api.get("/v1/tasks").then(({ items }) => task.append(...items.map((t) => h("option", { value: t.name }, t.name))), ctx.fail);
  load();
}

function field(label, input, extra = "") {
  return h("label", { class: `field ${extra}` }, h("span", {}, label), input);
}
