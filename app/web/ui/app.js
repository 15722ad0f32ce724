// The dashboard's shell: sign-in, the router (every view has a /ui/… URL that can be shared),
// and the one tenant tail that every view listens to.
import * as api from "./api.js";
import { h, replace, toast } from "./dom.js";
import { TenantTail } from "./live.js";
import * as overview from "./views/overview.js";
import * as queue from "./views/queue.js";
import * as run from "./views/run.js";
import * as runs from "./views/runs.js";
import * as schedules from "./views/schedules.js";
import * as workers from "./views/workers.js";

const ROUTES = [
  [/^\/ui\/?$/, overview, "overview"],
  [/^\/ui\/runs\/?$/, runs, "runs"],
  [/^\/ui\/runs\/([^/]+)\/?$/, run, "runs"],
  [/^\/ui\/queues\/([^/]+)\/?$/, queue, "overview"],
  [/^\/ui\/workers\/?$/, workers, "workers"],
  [/^\/ui\/schedules\/?$/, schedules, "schedules"],
];

const main = document.getElementById("main");
let tail = null;
let current = null; // {view, unlisten: [...]}

function navigate(url, { replace: inPlace = false } = {}) {
  history[inPlace ? "replaceState" : "pushState"](null, "", url);
  if (!inPlace) route();
}

function route() {
  if (current) {
    current.cleanups.forEach((fn) => fn());
    current = null;
  }
  if (!api.token()) return signIn();
  const path = location.pathname;
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  for (const a of document.querySelectorAll("#nav a")) {
    if (found && a.dataset.view === found[2]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, "No view has this address. ", h("a", { href: "/ui" }, "Overview")));
    return;
  }
  const [pattern, view] = found;
  const params = pattern.exec(path).slice(1).map(decodeURIComponent);
  const cleanups = [];
  current = { cleanups };
  const ctx = {
    api,
    params,
    search: new URLSearchParams(location.search),
    navigate,
    // A view's tail listener, removed when the view goes.
    listen: (fn) => cleanups.push(tail.listen(fn)),
    onCleanup: (fn) => cleanups.push(fn),
    fail: (error) => {
      if (error instanceof api.ApiError && error.status === 401) return signOut("The token is no longer valid.");
      toast(error.message, "error");
    },
  };
  main.replaceChildren();
  view.mount(main, ctx);
}

function signIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    placeholder: "tenant API token", "aria-describedby": "token-help",
  });
  const error = h("p", { class: "error", role: "alert", id: "signin-error" }, message || "");
  const form = h(
    "form",
    { class: "signin card", id: "signin" },
    h("h1", {}, "Sign in"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "muted", id: "token-help" }, "The token decides the tenant. It stays in this tab only (session storage)."),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    try {
      await api.request("GET", "/v1/queues", undefined, value);
    } catch (failure) {
      error.textContent = failure.status === 401 ? "That token is not valid." : failure.message;
      return;
    }
    api.setToken(value);
    start();
  });
  replace(main, form);
  input.focus();
}

function signOut(message) {
  api.setToken(null);
  if (tail) tail.stop();
  tail = null;
  if (current) current.cleanups.forEach((fn) => fn());
  current = null;
  signIn(message);
}

function start() {
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  tail = new TenantTail(api.token()).start();
  const conn = document.getElementById("conn");
  tail.onState((state) => {
    conn.dataset.state = state;
    conn.textContent = state === "live" ? "● live" : state === "connecting" ? "connecting…" : "◌ reconnecting…";
  });
  route();
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[href]");
  if (!a || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || a.target) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui")) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
  main.focus({ preventScroll: true });
});
window.addEventListener("popstate", route);
document.getElementById("signout").addEventListener("click", () => signOut());

if (api.token()) start();
else signIn();
