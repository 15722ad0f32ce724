// One queue: its card, pause/resume, its limits form (PUT /v1/queues/{name}/limits, contract
// §5.1), and its runs.
import { h, replace, throttle, toast } from "../dom.js";
import { queueCard } from "./queuecard.js";
import * as runs from "./runs.js";

export function mount(root, ctx) {
  const [name] = ctx.params;
  const path = `/v1/queues/${encodeURIComponent(name)}`;
  const card = h("div", { id: "queue-card" });
  const controls = h("div", { class: "actions", id: "queue-actions" });
  const limits = h("form", { class: "card limits", id: "limits" });
  const list = h("section", { id: "queue-runs" });
  replace(root, h("p", { class: "crumbs" }, h("a", { href: "/ui" }, "Overview"), " / ", name), h("div", { class: "view-head" }, h("h1", {}, `Queue ${name}`)), controls, card, limits, list);

  let shown = null;
  function render(queue) {
    shown = queue;
    replace(card, queueCard(queue, { heading: "h2" }));
    replace(
      controls,
      queue.paused
        ? h("button", { type: "button", id: "resume", onclick: () => act("resume") }, "▶ Resume")
        : h("button", { type: "button", id: "pause", onclick: () => act("pause") }, "‖ Pause"),
    );
  }

  async function load() {
    try {
      const { items } = await ctx.api.get("/v1/queues");
      const queue = items.find((q) => q.name === name) || empty(name);
      render(queue);
      if (!limits.childElementCount) limitsForm(queue.limits);
    } catch (error) {
      ctx.fail(error);
    }
  }

  async function act(action) {
    try {
      render({ ...shown, ...(await ctx.api.post(`${path}/${action}`)) });
      toast(action === "pause" ? `Queue ${name} paused.` : `Queue ${name} resumed.`);
    } catch (error) {
      ctx.fail(error);
    }
  }

  function limitsForm(current) {
    const c = current || {};
    const num = (id, label, value, hint) => h("label", { class: "field" }, h("span", {}, label), h("input", { id, name: id, type: "number", min: 1, step: "any", value: value ?? "", placeholder: hint }));
    replace(
      limits,
      h("h2", {}, "Limits"),
      h("p", { class: "muted" }, "Empty means no limit. They hold across every worker."),
      h("fieldset", { class: "row" }, h("legend", {}, "The queue"),
        num("l-concurrency", "Running at once", c.concurrency, "no limit"),
        num("l-rate", "Starts", c.rate && c.rate.limit, "no limit"),
        num("l-period", "per seconds", c.rate && c.rate.period_s, "60"),
      ),
      h("fieldset", { class: "row" }, h("legend", {}, "Each limit key"),
        num("l-key-concurrency", "Running at once", c.key_concurrency, "no limit"),
        num("l-key-rate", "Starts", c.key_rate && c.key_rate.limit, "no limit"),
        num("l-key-period", "per seconds", c.key_rate && c.key_rate.period_s, "60"),
      ),
      h("button", { type: "submit", class: "primary", id: "limits-save" }, "Save limits"),
    );
  }
  limits.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (id) => {
      const text = limits.querySelector(`#${id}`).value;
      return text === "" ? null : Number(text);
    };
    const rate = (l, p) => (value(l) === null ? null : { limit: value(l), period_s: value(p) ?? 1 });
    const body = {
      concurrency: value("l-concurrency"),
      rate: rate("l-rate", "l-period"),
      key_concurrency: value("l-key-concurrency"),
      key_rate: rate("l-key-rate", "l-key-period"),
    };
    try {
      const queue = await ctx.api.put(`${path}/limits`, body);
      render({ ...shown, ...queue });
      limitsForm(queue.limits);
      toast("Limits saved.");
    } catch (error) {
      ctx.fail(error);
    }
  });

  const reload = throttle(load, 1000);
  ctx.listen(({ events, gap }) => (gap || events.length) && reload());
  load();
  runs.mount(list, ctx, { fixedQueue: name, title: "Runs in this queue" });
}

function empty(name) {
  const counts = Object.fromEntries(["waiting", "queued", "delayed", "running", "succeeded", "failed", "cancelled"].map((s) => [s, 0]));
  return { name, paused: false, workers: 0, counts, limits: null };
}
