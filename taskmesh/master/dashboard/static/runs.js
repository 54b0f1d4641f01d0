// The runs table: one row per task with its latest run, patched in place by live events, with
// three actions per row: change the priority, cancel an unfinished task, and retry a task that
// ended without success.
import {
  RETRYABLE_STATES, TERMINAL_STATES, cancelTask, retryTask, setPriority, shortEnum,
} from "./api.js";
import { badge, el, formatInstant } from "./dom.js";

/** A table row's model from a TaskStatus (GET /v1/tasks item). */
function rowOf({ task, latest_run: run = {} }) {
  return {
    taskId: task.id,
    name: task.spec?.name ?? "",
    kind: task.spec?.kind ?? "default",
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
  constructor(tbody, emptyNote, onSelect, onNotice) {
    this.tbody = tbody;
    this.emptyNote = emptyNote;
    this.onNotice = onNotice;
    this.rows = new Map(); // task id -> row model, in display order
    this.selected = null;
    tbody.addEventListener("click", (event) => {
      if (event.target.closest("form, button, input")) return; // actions never select the row
      const row = event.target.closest("tr[data-task-id]");
      if (row) onSelect(row.dataset.taskId);
    });
    this.deferred = null; // a render held back while a priority was being typed
    tbody.addEventListener("focusout", () => setTimeout(() => {
      if (this.deferred && !tbody.contains(document.activeElement)) this.render(this.deferred);
    }));
    tbody.addEventListener("submit", (event) => this.onPriority(event));
    tbody.addEventListener("click", (event) => {
      const retry = event.target.closest("button.retry");
      if (retry) this.onRetry(retry.closest("tr").dataset.taskId, retry);
      const cancel = event.target.closest("button.cancel");
      if (cancel) this.onCancel(cancel.closest("tr").dataset.taskId, cancel);
    });
  }

  async onPriority(event) {
    event.preventDefault();
    const form = event.target;
    const taskId = form.closest("tr").dataset.taskId;
    const priority = Number(form.elements.priority.value);
    try {
      await setPriority(taskId, priority);
      form.elements.priority.blur(); // lets held-back renders through
      const row = this.rows.get(taskId);
      if (row) row.priority = priority;
      this.onNotice(`priority of ${taskId.slice(0, 8)} set to ${priority}`);
    } catch (error) {
      this.onNotice(`priority not changed: ${error.message}`, true);
    }
  }

  async onRetry(taskId, button) {
    button.disabled = true;
    try {
      const answer = await retryTask(taskId);
      const extra = answer.requeued.length ? `, ${answer.requeued.length} dependent(s) re-queued` : "";
      this.onNotice(`retry of ${taskId.slice(0, 8)}: attempt ${answer.run.attempt}${extra}`);
    } catch (error) {
      button.disabled = false;
      this.onNotice(`retry refused: ${error.message}`, true);
    }
  }

  async onCancel(taskId, button) {
    button.disabled = true;
    try {
      const answer = await cancelTask(taskId);
      this.onNotice(`cancel of ${taskId.slice(0, 8)} sent for ${answer.cancelled_run_ids.length} run(s)`);
    } catch (error) {
      button.disabled = false;
      this.onNotice(`cancel refused: ${error.message}`, true);
    }
  }

  /** Show these TaskStatus items (newest first), replacing what is shown. */
  render(statuses) {
    if (this.tbody.contains(document.activeElement)) { // the operator is typing: wait for it
      this.deferred = statuses;
      return;
    }
    this.deferred = null;
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
   * Apply a batch of run events to the rows they concern. Returns the events about tasks not
   * on screen (a new submission, or a task outside this page), for the caller to decide whether
   * the list must be reloaded.
   */
  applyEvents(events) {
    const unknown = [];
    for (const event of events) {
      const row = this.rows.get(event.task_id);
      if (!row) {
        unknown.push(event);
        continue;
      }
      if (event.attempt < row.attempt) continue; // news about an older attempt
      patch(row, event);
      const shown = this.tbody.querySelector(`tr[data-task-id="${row.taskId}"]`);
      if (!shown) continue;
      if (shown.contains(document.activeElement)) shown.dataset.state = row.state; // typing
      else shown.replaceWith(this.rowNode(row));
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
      el("td", {}, row.kind),
      el("td", { class: "wide-only" }, formatInstant(row.due)),
      el("td", { class: "wide-only" }, formatInstant(row.started)),
      el("td", {}, formatInstant(row.finished)),
      el("td", { class: "priority" }, this.priorityForm(row)),
      el("td", { class: "row-actions" },
        el("button", {
          type: "button", class: "cancel", disabled: TERMINAL_STATES.has(row.state),
          title: "cancel its unfinished runs (a running command is killed)",
        }, "Cancel"),
        el("button", {
          type: "button", class: "retry", disabled: !RETRYABLE_STATES.has(row.state),
          title: "run it again as a new attempt",
        }, "Retry")));
  }

  priorityForm(row) {
    return el("form", { class: "priority-form", "aria-label": "priority" },
      el("input", {
        name: "priority", type: "number", min: -1000, max: 1000, step: 1, value: row.priority,
        "aria-label": "priority", required: true,
      }),
      el("button", { type: "submit", title: "set the priority of the task and its waiting runs" }, "Set"));
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
