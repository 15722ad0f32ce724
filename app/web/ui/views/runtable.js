// The table of runs that the runs list and a queue's page share, patched in place as the
// tail's events arrive (one row per run, found by id).
import { STATUS_AFTER } from "../runlane.js";
import { ago, badge, h, replace, shortId } from "../dom.js";

export class RunTable {
  constructor() {
    this.body = h("tbody");
    this.rows = new Map(); // run id -> {tr, run}
    this.el = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "runs", id: "runs-table" },
        h("thead", {}, h("tr", {}, ["Status", "Run", "Task", "Queue", "Progress", "Attempts", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        this.body,
      ),
    );
  }

  get ids() {
    return [...this.rows.keys()];
  }

  set(runs) {
    this.rows.clear();
    replace(this.body);
    this.add(runs);
  }

  add(runs, { first = false } = {}) {
    const fresh = runs.filter((run) => !this.rows.has(run.id));
    const trs = fresh.map((run) => this.#row(run));
    if (first) this.body.prepend(...trs);
    else this.body.append(...trs);
    if (!this.rows.size) replace(this.body, h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No runs match.")));
    return fresh.length;
  }

  // Applies a batch of events to the rows they concern; returns the ids of runs not shown.
  apply(events) {
    const unknown = new Set();
    for (const event of events) {
      const found = this.rows.get(event.run_id);
      if (!found) {
        unknown.add(event.run_id);
        continue;
      }
      const status = STATUS_AFTER[event.type];
      if (status) found.run.status = status;
      if (event.type === "run.started") found.run.attempt = event.data.attempt;
      if (event.type === "run.progress") found.run.progress = event.data;
      found.dirty = true;
    }
    for (const [id, found] of this.rows) {
      if (!found.dirty) continue;
      found.dirty = false;
      const tr = this.#row(found.run);
      found.tr.replaceWith(tr);
      this.rows.get(id).tr = tr;
    }
    return unknown;
  }

  #row(run) {
    if (!this.rows.size) this.body.querySelector("td.empty")?.closest("tr").remove();
    const percent = run.progress ? run.progress.percent : null;
    const tr = h(
      "tr",
      { "data-run-id": run.id, "data-status": run.status },
      h("td", {}, badge(run.status)),
      h("td", {}, h("a", { href: `/ui/runs/${run.id}`, class: "mono", title: run.id }, shortId(run.id))),
      h("td", { class: "mono" }, run.task),
      h("td", {}, h("a", { href: `/ui/queues/${encodeURIComponent(run.queue)}` }, run.queue)),
      h("td", {}, percent === null ? h("span", { class: "muted" }, "—") : mini(percent)),
      h("td", { class: "num", title: `at most ${run.max_attempts} per try` }, String(run.attempt)),
      h("td", { title: run.created_at }, ago(run.created_at)),
    );
    this.rows.set(run.id, { tr, run });
    return tr;
  }
}

function mini(percent) {
  const fill = h("span", { class: "fill" });
  fill.style.width = `${percent}%`;
  return h("span", { class: "mini", title: `${percent}%` }, h("span", { class: "track" }, fill), ` ${percent}%`);
}
