// A flow parent's children as a tree: each level from GET /v1/runs?parent_id=, down to the
// depth a flow may have (contract §5.4).
import { badge, h, shortId } from "../dom.js";

const MAX_DEPTH = 5;
const PAGE = 200;

export async function childrenTree(api, parentId, depth = 1) {
  const { items } = await api.get(`/v1/runs?parent_id=${parentId}&limit=${PAGE}`);
  items.reverse(); // the list is newest first; children read best in the order they were given
  const nodes = await Promise.all(
    items.map(async (child) =>
      h(
        "li",
        { "data-run-id": child.id },
        badge(child.status),
        " ",
        h("a", { href: `/ui/runs/${child.id}`, class: "mono" }, shortId(child.id)),
        " ",
        h("span", { class: "mono muted" }, child.task),
        child.children && depth < MAX_DEPTH ? await childrenTree(api, child.id, depth + 1) : null,
      ),
    ),
  );
  return h("ul", { class: "tree" }, nodes);
}
