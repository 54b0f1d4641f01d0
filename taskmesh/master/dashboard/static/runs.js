// The runs table: one row per task with its latest run, patched in place by live events.
import { TERMINAL_STATES, shortEnum } from "./api.js";
import { badge, el, formatInstant } from "./dom.js";

/** A table row's model from a TaskStatus (GET /v1/tasks item). */
function rowOf({ task, latest_run: run = {} }) {
  return {
    taskId: task.id,
    name: task.spec?.name ?? "",
    attempt: run.attempt ?? 0,
    state: shortEnum(run.state, "RUN_STATE_") || "no run",
    region: run.region ?? task.spec?.region ?? "",
    worker: run.worker_id ?? "",
    priority: run.priority ?? task.spec?.priority ?? 0,
    due: run.due_at ?? "",
    started: run.started_at ?? "",
    finished: run.finished_at ?? "",
  };
}

export class RunsTable {
  constructor(tbody, emptyNote, onSelect) {
    this.tbody = tbody;
    this.emptyNote = emptyNote;
    this.rows = new Map(); // task id -> row model, in display order
    this.selected = null;
    tbody.addEventListener("click", (event) => {
      const row = event.target.closest("tr[data-task-id]");
      if (row) onSelect(row.dataset.taskId);
    });
  }

  /** Show these TaskStatus items (newest first), replacing what is shown. */
  render(statuses) {
    this.rows = new Map(statuses.map((status) => [status.task.id, rowOf(status)]));
    this.tbody.replaceChildren(...[...this.rows.values()].map((row) => this.rowNode(row)));
    this.emptyNote.hidden = this.rows.size > 0;
  }

  /** Mark the task shown in the detail panel. */
  select(taskId) {
    this.selected = taskId;
    for (const node of this.tbody.rows) {
      node.setAttribute("aria-selected", String(node.dataset.taskId === taskId));
    }
  }

  /**
   * Apply a batch of run events to the rows they concern. Returns true when the batch names
   * a task not on screen (a new submission), so the caller should reload the list.
   */
  applyEvents(events) {
    let unknown = false;
    for (const event of events) {
      const row = this.rows.get(event.task_id);
      if (!row) {
        unknown = true;
        continue;
      }
      if (event.attempt < row.attempt) continue; // news about an older attempt
      patch(row, event);
      this.tbody.querySelector(`tr[data-task-id="${row.taskId}"]`)?.replaceWith(this.rowNode(row));
    }
    return unknown;
  }

  rowNode(row) {
    return el("tr", {
      "data-task-id": row.taskId,
      "data-state": row.state,
      "aria-selected": String(row.taskId === this.selected),
    },
      el("td", { class: "mono", title: row.taskId }, row.taskId.slice(0, 8)),
      el("td", { class: "name" }, row.name),
      el("td", { class: "run-state" }, badge(row.state)),
      el("td", {}, row.region),
      el("td", { class: "mono" }, row.worker),
      el("td", { class: "num" }, row.priority),
      el("td", {}, formatInstant(row.due)),
      el("td", {}, formatInstant(row.started)),
      el("td", {}, formatInstant(row.finished)));
  }
}

/** Move a row model to the state a run event reports. */
function patch(row, event) {
  const state = shortEnum(event.to_state, "RUN_STATE_");
  if (event.attempt > row.attempt) { // a retry: the new attempt starts afresh
    Object.assign(row, { attempt: event.attempt, started: "", finished: "", worker: "" });
  }
  row.state = state;
  row.region = event.region ?? row.region;
  row.worker = event.worker_id ?? row.worker;
  if (state === "running") row.started = event.at;
  if (TERMINAL_STATES.has(state)) row.finished = event.at;
}
