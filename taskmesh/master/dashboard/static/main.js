// Wires the dashboard together: initial loads, live events, periodic refresh as a fallback.
import { RUN_STATES, fetchCluster, fetchTasks } from "./api.js";
import { DetailPanel } from "./detail.js";
import { el, formatInstant } from "./dom.js";
import { followEvents } from "./live.js";
import { renderOverview } from "./overview.js";
import { RunsTable } from "./runs.js";

const OVERVIEW_EVERY_MS = 5000; // heartbeats and credits change without run events
const RUNS_EVERY_MS = 10000; // fallback in case the event stream is down
const AFTER_EVENTS_MS = 300; // batch reloads caused by a burst of events

const $ = (selector) => document.querySelector(selector);
const filters = $("#run-filters");
const liveStatus = $("#live-status");

const table = new RunsTable($("#runs-table tbody"), $("#runs-empty"), (taskId) => select(taskId));
const detail = new DetailPanel($("#detail"), () => select(null));

/** Runs `load` at most once per `delay`, however often it is asked for. */
function debounced(load, delay) {
  let timer = null;
  return () => {
    if (timer === null) timer = setTimeout(() => { timer = null; load(); }, delay);
  };
}

async function loadOverview() {
  try {
    const overview = await fetchCluster();
    renderOverview(overview, $("#totals"), $("#regions"));
    $("#observed-at").textContent = `observed ${formatInstant(overview.observed_at)}`;
    fillRegionFilter(overview.regions.map((region) => region.name));
  } catch (error) {
    $("#observed-at").textContent = `overview unavailable: ${error.message}`;
  }
}

// Responses can arrive out of order; only the newest request may draw.
let runsRequest = 0;
async function loadRuns() {
  const number = ++runsRequest;
  try {
    const page = await fetchTasks(Object.fromEntries(new FormData(filters)));
    if (number === runsRequest) table.render(page.tasks ?? []);
  } catch (error) {
    console.warn("runs not loaded:", error);
  }
}

function select(taskId) {
  table.select(taskId);
  detail.show(taskId);
}

function fillRegionFilter(names) {
  const menu = filters.elements.region;
  const shown = new Set([...menu.options].map((option) => option.value));
  for (const name of names.filter((name) => !shown.has(name))) menu.append(el("option", {}, name));
}

const reloadRuns = debounced(loadRuns, AFTER_EVENTS_MS);
const reloadOverview = debounced(loadOverview, 1000); // the overview is the costlier read

function onEvents(events) {
  // With a state filter a row may have to leave the list: reload rather than patch.
  const filtered = Boolean(filters.elements.state.value);
  if (table.applyEvents(events) || filtered) reloadRuns();
  if (events.some((event) => event.task_id === detail.taskId)) detail.refresh();
  reloadOverview();
}

function start() {
  for (const state of RUN_STATES) filters.elements.state.append(el("option", {}, state));
  filters.addEventListener("change", loadRuns);
  followEvents(onEvents, (status) => {
    liveStatus.dataset.live = status;
    liveStatus.textContent = status;
  });
  loadOverview();
  loadRuns();
  setInterval(loadOverview, OVERVIEW_EVERY_MS);
  setInterval(loadRuns, RUNS_EVERY_MS);
}

start();
