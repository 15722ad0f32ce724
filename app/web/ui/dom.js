// Small DOM helpers shared by the views: an element builder (no innerHTML, so nothing a run's
// data holds is ever parsed as markup), status badges and time formats.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// Each status has an icon and a word, so it reads without colour too.
export const STATUS = {
  waiting: { icon: "◌", label: "waiting" },
  queued: { icon: "●", label: "queued" },
  delayed: { icon: "◷", label: "delayed" },
  running: { icon: "▶", label: "running" },
  succeeded: { icon: "✓", label: "succeeded" },
  failed: { icon: "✕", label: "failed" },
  cancelled: { icon: "⊘", label: "cancelled" },
};
export const STATUSES = Object.keys(STATUS);
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function badge(status) {
  const known = STATUS[status] || { icon: "?", label: status };
  return h(
    "span",
    { class: `badge status-${status}`, "data-status": status },
    h("span", { class: "icon", "aria-hidden": "true" }, known.icon),
    known.label,
  );
}

export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const at = new Date(iso);
  return h("time", { datetime: iso, title: at.toISOString() }, at.toLocaleString());
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "—";
  const s = Math.round((now - new Date(iso).getTime()) / 1000);
  if (Math.abs(s) < 1) return "just now";
  if (s < 0) return `in ${duration(-s * 1000)}`;
  return `${duration(s * 1000)} ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "—";
}

export function json(value) {
  return h("pre", { class: "json" }, value === undefined ? "" : JSON.stringify(value, null, 2));
}

export function link(href, ...children) {
  return h("a", { href }, ...children);
}

// A message at the bottom of the screen; assertive for errors so screen readers say it at once.
export function toast(message, kind = "info") {
  const host = document.getElementById("toasts");
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  host.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

// Coalesces calls into one per animation frame: views re-render at most once per frame however
// many events arrive.
export function perFrame(fn) {
  let scheduled = false;
  return () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      fn();
    });
  };
}

// At most one call per `ms`, the last one always made: for REST reloads that events trigger.
export function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, wait);
  };
}
