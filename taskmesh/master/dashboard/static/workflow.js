// The workflow view: a workflow's DAG as an SVG graph, laid out in layers (dependencies to the
// left of their dependents), nodes coloured by their latest run's state and recoloured live
// from the event stream. Also the list of workflows that leads to it.
import { fetchWorkflow, fetchWorkflows, shortEnum } from "./api.js";
import { badge, el, formatInstant, svg } from "./dom.js";

const NODE = { width: 170, height: 42 };
const GAP = { x: 64, y: 20 };
const MARGIN = 14;

/**
 * Layers by longest path from the roots, then each layer ordered by the mean position of the
 * node's dependencies (one barycenter sweep: few crossings for the DAGs people draw).
 * `ids` in their given order, `edges` as {from, to}. Returns {positions: Map(id -> {x, y}),
 * layers, width, height}.
 */
export function layeredLayout(ids, edges) {
  const parents = new Map(ids.map((id) => [id, []]));
  for (const { from, to } of edges) parents.get(to)?.push(from);
  const layer = new Map();
  const layerOf = (id, seen = new Set()) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0; // a cycle cannot be submitted; never loop if one were shown
    seen.add(id);
    const value = Math.max(-1, ...parents.get(id).filter((p) => parents.has(p)).map((p) => layerOf(p, seen))) + 1;
    layer.set(id, value);
    return value;
  };
  const layers = [];
  for (const id of ids) (layers[layerOf(id)] ??= []).push(id);
  const rank = new Map();
  layers.forEach((members, depth) => {
    if (depth > 0) {
      const centre = (id) => {
        const known = parents.get(id).filter((p) => rank.has(p)).map((p) => rank.get(p));
        return known.length ? known.reduce((a, b) => a + b, 0) / known.length : Infinity;
      };
      members.sort((a, b) => centre(a) - centre(b));
    }
    members.forEach((id, index) => rank.set(id, index));
  });
  const tallest = Math.max(1, ...layers.map((members) => members.length));
  const height = MARGIN * 2 + tallest * NODE.height + (tallest - 1) * GAP.y;
  const positions = new Map();
  layers.forEach((members, depth) => {
    const span = members.length * NODE.height + (members.length - 1) * GAP.y;
    const top = (height - span) / 2;
    members.forEach((id, index) => positions.set(id, {
      x: MARGIN + depth * (NODE.width + GAP.x),
      y: top + index * (NODE.height + GAP.y),
    }));
  });
  const width = MARGIN * 2 + layers.length * NODE.width + (layers.length - 1) * GAP.x;
  return { positions, layers, width, height };
}

function edgePath(from, to) {
  const x1 = from.x + NODE.width;
  const y1 = from.y + NODE.height / 2;
  const x2 = to.x - 2; // the arrow head ends at the border
  const y2 = to.y + NODE.height / 2;
  const bend = (x2 - x1) / 2;
  return `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`;
}

/** A node model from a GET /v1/workflows/{id} task item. */
function nodeOf({ task, latest_run: run = {} }) {
  return {
    id: task.id,
    name: task.spec?.name ?? task.id.slice(0, 8),
    state: shortEnum(run.state, "RUN_STATE_") || "no run",
    attempt: run.attempt ?? 0,
  };
}

export class WorkflowView {
  constructor(section, onSelectTask) {
    this.section = section;
    this.onSelectTask = onSelectTask;
    this.workflowId = null;
    this.nodes = new Map();
  }

  /** Show a workflow (fetching it), or hide the view for null. */
  async show(workflowId) {
    this.workflowId = workflowId;
    this.section.hidden = workflowId === null;
    if (workflowId === null) {
      this.nodes = new Map();
      return;
    }
    await this.refresh();
    this.section.scrollIntoView({ block: "nearest" });
  }

  async refresh() {
    const workflowId = this.workflowId;
    if (workflowId === null) return;
    try {
      const graph = await fetchWorkflow(workflowId);
      if (workflowId === this.workflowId) this.draw(graph);
    } catch (error) {
      this.section.replaceChildren(el("p", { class: "muted" }, error.message));
    }
  }

  /** Recolour the nodes these run events concern; true when one of them is shown. */
  applyEvents(events) {
    let touched = false;
    for (const event of events) {
      const node = this.nodes.get(event.task_id);
      if (!node || event.attempt < node.attempt) continue;
      node.attempt = event.attempt;
      node.state = shortEnum(event.to_state, "RUN_STATE_");
      const group = this.section.querySelector(`g.wf-node[data-task-id="${node.id}"]`);
      if (group) {
        group.setAttribute("data-state", node.state);
        group.querySelector(".wf-state").textContent = stateText(node);
      }
      touched = true;
    }
    return touched;
  }

  draw({ workflow, tasks, edges }) {
    this.nodes = new Map(tasks.map((item) => [item.task.id, nodeOf(item)]));
    const layout = layeredLayout([...this.nodes.keys()], edges);
    const edgeNodes = edges.filter(({ from, to }) => layout.positions.has(from) && layout.positions.has(to))
      .map(({ from, to }) => svg("path", {
        class: "wf-edge", d: edgePath(layout.positions.get(from), layout.positions.get(to)),
        "data-from": from, "data-to": to, "marker-end": "url(#wf-arrow)",
      }));
    const nodeGroups = [...this.nodes.values()].map((node) => this.nodeGroup(node, layout.positions.get(node.id)));
    const arrow = svg("marker", {
      id: "wf-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
      orient: "auto-start-reverse",
    }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "wf-arrow-head" }));
    const graph = svg("svg", {
      id: "workflow-graph", width: layout.width, height: layout.height,
      viewBox: `0 0 ${layout.width} ${layout.height}`, role: "img",
      "aria-label": `workflow ${workflow.name}`,
    }, svg("defs", {}, arrow), ...edgeNodes, ...nodeGroups);
    const close = el("button", { type: "button", class: "close", "aria-label": "close workflow" }, "✕");
    close.addEventListener("click", () => this.show(null));
    this.section.dataset.workflowId = workflow.id;
    this.section.replaceChildren(
      el("div", { class: "section-head" },
        el("h2", { id: "workflow-title" }, `Workflow ${workflow.name || workflow.id.slice(0, 8)}`),
        el("span", { class: "muted mono" }, workflow.id),
        el("span", { class: "muted" }, `${workflow.task_count} tasks · created ${formatInstant(workflow.created_at)}`),
        close),
      el("div", { class: "graph-scroll" }, graph),
      legend());
  }

  nodeGroup(node, { x, y }) {
    const group = svg("g", {
      class: "wf-node", "data-task-id": node.id, "data-state": node.state,
      transform: `translate(${x},${y})`, tabindex: 0, role: "button",
    },
    svg("title", {}, `${node.name} (${node.id})`),
    svg("rect", { width: NODE.width, height: NODE.height, rx: 7 }),
    svg("text", { x: 10, y: 17, class: "wf-name" }, node.name.length > 22 ? `${node.name.slice(0, 21)}…` : node.name),
    svg("text", { x: 10, y: 33, class: "wf-state" }, stateText(node)));
    group.addEventListener("click", () => this.onSelectTask(node.id));
    return group;
  }
}

const stateText = (node) => (node.attempt > 1 ? `${node.state} · attempt ${node.attempt}` : node.state);

function legend() {
  const states = ["blocked", "pending", "running", "succeeded", "failed", "upstream_failed", "cancelled"];
  return el("p", { class: "legend muted" }, ...states.map((state) => badge(state)));
}

/** The workflows list: newest first; a click opens the workflow view. */
export async function renderWorkflowList(tbody, emptyNote, onOpen) {
  const { workflows = [] } = await fetchWorkflows();
  tbody.replaceChildren(...workflows.map((workflow) => {
    const row = el("tr", { "data-workflow-id": workflow.id },
      el("td", { class: "mono" }, workflow.id.slice(0, 8)),
      el("td", { class: "name" }, workflow.name || "—"),
      el("td", { class: "num" }, workflow.task_count),
      el("td", {}, formatInstant(workflow.created_at)));
    row.addEventListener("click", () => onOpen(workflow.id));
    return row;
  }));
  emptyNote.hidden = workflows.length > 0;
}
