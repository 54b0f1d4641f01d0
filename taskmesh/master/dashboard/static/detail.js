// The task detail panel: the latest run's timeline, its attempts, output, its workflow, and
// Cancel / Retry buttons.
import {
  RETRYABLE_STATES, TERMINAL_STATES, cancelTask, fetchTask, fetchTaskEvents, retryTask, shortEnum,
} from "./api.js";
import { badge, el, formatInstant, secondsBetween } from "./dom.js";

// The latest run's steps in order, with the run field that dates each one.
const STEPS = [
  ["due", "due_at"],
  ["delegated", "delegated_at"],
  ["assigned", "assigned_at"],
  ["started", "started_at"],
  ["finished", "finished_at"],
];

export class DetailPanel {
  constructor(node, onClose, onOpenWorkflow) {
    this.node = node;
    this.onClose = onClose;
    this.onOpenWorkflow = onOpenWorkflow;
    this.taskId = null;
    this.notice = "";
  }

  /** Show one task (fetching it), or hide the panel for null. */
  async show(taskId) {
    this.taskId = taskId;
    this.notice = "";
    this.node.hidden = taskId === null;
    if (taskId !== null) await this.refresh();
  }

  /** Fetch the shown task again and redraw. */
  async refresh() {
    const taskId = this.taskId;
    if (taskId === null) return;
    try {
      const [detail, log] = await Promise.all([fetchTask(taskId), fetchTaskEvents(taskId)]);
      if (taskId === this.taskId) this.draw(detail, log.events ?? []);
    } catch (error) {
      if (taskId === this.taskId) this.node.replaceChildren(el("p", { class: "muted" }, error.message));
    }
  }

  draw({ task, runs }, events) {
    const run = runs[0] ?? {}; // newest attempt first
    const state = shortEnum(run.state, "RUN_STATE_") || "no run";
    const spec = task.spec ?? {};
    this.node.dataset.taskId = task.id;
    this.node.replaceChildren(
      el("header", {},
        el("h2", { title: task.id }, spec.name || task.id),
        badge(state),
        el("button", { type: "button", class: "close", "aria-label": "close" }, "✕")),
      facts([
        ["task", el("span", { class: "mono" }, task.id)],
        ["command", el("span", { class: "mono" }, [spec.command, ...(spec.args ?? [])].join(" "))],
        ["region", run.region ?? spec.region ?? "any"],
        ["worker", run.worker_id ?? "—"],
        ["attempt", run.attempt ?? "—"],
        ["priority", run.priority ?? spec.priority ?? 0],
        ["exit code", run.exit_code ?? "—"],
        ["error", run.error || null],
        ["workflow", task.workflow_id ? this.workflowLink(task.workflow_id) : null],
      ]),
      el("h3", {}, "Latest run"),
      timeline(run),
      el("h3", {}, "Output (tail)"),
      el("pre", { class: "output mono" }, run.output_tail || "(no output)"),
      el("h3", {}, `Attempts (${runs.length})`),
      attempts(runs),
      el("h3", {}, `Transitions (${events.length})`),
      transitions(events),
      this.actions(task.id, state));
    this.node.querySelector(".close").addEventListener("click", () => this.onClose());
  }

  workflowLink(workflowId) {
    const link = el("a", { href: `#workflow=${workflowId}`, class: "mono workflow-link" },
      `${workflowId.slice(0, 8)} (show graph)`);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      this.onOpenWorkflow(workflowId);
    });
    return link;
  }

  actions(taskId, state) {
    const cancel = el("button", {
      type: "button", id: "cancel-task", class: "danger", disabled: TERMINAL_STATES.has(state),
    }, "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        const answer = await cancelTask(taskId);
        this.notice = `cancel sent for ${answer.cancelled_run_ids.length} run(s)`;
      } catch (error) {
        this.notice = `cancel failed: ${error.message}`;
      }
      await this.refresh();
    });
    const retry = el("button", {
      type: "button", id: "retry-task", disabled: !RETRYABLE_STATES.has(state),
    }, "Retry");
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        const answer = await retryTask(taskId);
        this.notice = `retried: attempt ${answer.run.attempt} is ${shortEnum(answer.run.state, "RUN_STATE_")}`;
      } catch (error) {
        this.notice = `retry refused: ${error.message}`;
      }
      await this.refresh();
    });
    return el("div", { class: "actions" }, cancel, retry, el("span", { class: "muted notice" }, this.notice));
  }
}

function facts(pairs) {
  const shown = pairs.filter(([, value]) => value !== null && value !== "");
  return el("dl", { class: "facts" }, ...shown.flatMap(([name, value]) =>
    [el("dt", {}, name), el("dd", {}, value)]));
}

/** due -> delegated -> assigned -> started -> finished, each with its time and the gap. */
function timeline(run) {
  let previous = null;
  const items = STEPS.map(([label, field]) => {
    const at = run[field];
    const gap = at && previous ? ` (+${secondsBetween(previous, at).toFixed(2)} s)` : "";
    if (at) previous = at;
    return el("li", { "data-step": label, "data-reached": String(Boolean(at)) },
      label, at ? el("time", { datetime: at }, formatInstant(at) + gap) : null);
  });
  return el("ol", { class: "timeline" }, ...items);
}

/** Every transition of the task's attempts, oldest first, each with the time since the last. */
function transitions(events) {
  let previous = null;
  const items = events.map((event) => {
    const to = shortEnum(event.to_state, "RUN_STATE_");
    const from = shortEnum(event.from_state, "RUN_STATE_");
    const gap = previous ? `+${secondsBetween(previous, event.at).toFixed(2)} s` : "";
    previous = event.at;
    const where = [event.region, event.worker_id].filter(Boolean).join(" / ");
    const why = Object.entries(event.detail ?? {}).map(([key, value]) => `${key}: ${value}`).join(", ");
    return el("li", { "data-to-state": to, "data-attempt": event.attempt ?? 1 },
      el("time", { datetime: event.at }, formatInstant(event.at)),
      el("small", { class: "muted gap" }, gap),
      from ? el("span", { class: "muted" }, `${from} →`) : el("span", { class: "muted" }, "created"),
      badge(to),
      el("small", { class: "muted" }, `#${event.attempt ?? 1}${where ? ` · ${where}` : ""}`),
      why ? el("small", { class: "why" }, why) : null);
  });
  return el("ol", { class: "transitions" }, ...items);
}

function attempts(runs) {
  const head = el("tr", {}, ...["#", "State", "Worker", "Exit", "Finished"]
    .map((title) => el("th", {}, title)));
  const rows = runs.map((run) => el("tr", {},
    el("td", { class: "num" }, run.attempt),
    el("td", {}, badge(shortEnum(run.state, "RUN_STATE_"))),
    el("td", { class: "mono" }, run.worker_id ?? ""),
    el("td", { class: "num" }, run.exit_code ?? ""),
    el("td", {}, formatInstant(run.finished_at))));
  return el("table", { class: "grid attempts" }, el("thead", {}, head), el("tbody", {}, ...rows));
}
