// Wires the dashboard together: initial loads, live events, periodic refresh as a fallback,
// the runs filters and pages, and the workflow view (#workflow=<id> in the address).
import {
  RUN_STATES, fetchActivity, fetchCluster, fetchTasks, forgetToken, storeToken,
} from "./api.js";
import { renderCharts } from "./charts.js";
import { DetailPanel } from "./detail.js";
import { el, formatInstant } from "./dom.js";
import { RunFilters } from "./filters.js";
import { followEvents } from "./live.js";
import { renderOverview } from "./overview.js";
import { RunsTable } from "./runs.js";
import { WorkflowView, renderWorkflowList } from "./workflow.js";

const OVERVIEW_EVERY_MS = 5000; // heartbeats and credits change without run events
const RUNS_EVERY_MS = 10000; // fallback in case the event stream is down
const ACTIVITY_EVERY_MS = 10000; // one chart slice
const AFTER_EVENTS_MS = 300; // batch reloads caused by a burst of events
const PAGE_SIZE = 50;

const $ = (selector) => document.querySelector(selector);
const filters = $("#run-filters");
const runFilters = new RunFilters(filters);
const liveStatus = $("#live-status");

const notice = (text, failed = false) => {
  const node = $("#runs-notice");
  node.textContent = text;
  node.dataset.failed = String(failed);
};
const table = new RunsTable($("#runs-table tbody"), $("#runs-empty"), (taskId) => select(taskId), notice);
const detail = new DetailPanel($("#detail"), () => select(null), (workflowId) => openWorkflow(workflowId));
const workflow = new WorkflowView($("#workflow"), (taskId) => select(taskId));

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

async function loadActivity() {
  try {
    renderCharts(await fetchActivity(), $("#charts"));
  } catch (error) {
    $("#charts").replaceChildren(el("p", { class: "muted" }, `charts unavailable: ${error.message}`));
  }
}

async function loadWorkflows() {
  try {
    await renderWorkflowList($("#workflows-table tbody"), $("#workflows-empty"), openWorkflow);
  } catch (error) {
    console.warn("workflows not loaded:", error);
  }
}

// Paging: the tokens of the pages shown so far; the last one is the current page's.
let pageTokens = [""];
let nextToken = "";

function filterValues() {
  return { ...runFilters.values(), page_token: pageTokens.at(-1) };
}

// Responses can arrive out of order; only the newest request may draw.
let runsRequest = 0;
async function loadRuns() {
  const number = ++runsRequest;
  try {
    const page = await fetchTasks(filterValues(), PAGE_SIZE);
    if (number !== runsRequest) return;
    table.render(page.tasks ?? []);
    nextToken = page.next_page_token ?? "";
    $("#page-older").disabled = !nextToken;
    $("#page-newer").disabled = pageTokens.length < 2;
    $("#page-number").textContent = `page ${pageTokens.length}`;
  } catch (error) {
    console.warn("runs not loaded:", error);
  }
}

function select(taskId) {
  table.select(taskId);
  detail.show(taskId);
}

function openWorkflow(workflowId) {
  const hash = workflowId ? `#workflow=${workflowId}` : "";
  if (location.hash !== hash) history.replaceState(null, "", `${location.pathname}${location.search}${hash}`);
  workflow.show(workflowId);
}

function fillRegionFilter(names) {
  const menu = filters.elements.region;
  const shown = new Set([...menu.options].map((option) => option.value));
  for (const name of names.filter((name) => !shown.has(name))) menu.append(el("option", {}, name));
}

const reloadRuns = debounced(loadRuns, AFTER_EVENTS_MS);
const reloadOverview = debounced(loadOverview, 1000); // the overview is the costlier read
const reloadActivity = debounced(loadActivity, 2000);
const reloadWorkflow = debounced(() => workflow.refresh(), 1000);

function onEvents(events) {
  // A task not shown may join the view (the server applies the filters); with a state filter or
  // past page 1 a shown row may have to leave: reload rather than patch.
  const joining = table.applyEvents(events).some((event) => runFilters.mayJoin(event));
  if (joining || runFilters.narrowedByState || pageTokens.length > 1) reloadRuns();
  if (events.some((event) => event.task_id === detail.taskId)) detail.refresh();
  if (workflow.applyEvents(events)) reloadWorkflow(); // recoloured at once, then re-read
  if (events.some((event) => !event.from_state)) reloadWorkflowsList(); // new runs, maybe a new workflow
  reloadOverview();
  reloadActivity();
}
const reloadWorkflowsList = debounced(loadWorkflows, 2000);

function turnPage(older) {
  if (older && nextToken) pageTokens.push(nextToken);
  if (!older && pageTokens.length > 1) pageTokens.pop();
  loadRuns();
}

// A 401 from any call: show the login form; a submitted token is stored and the page restarts.
const login = $("#login");
let following = null;
window.addEventListener("taskmesh:unauthenticated", () => {
  if (!login.hidden) return;
  forgetToken();
  following?.();
  following = null;
  login.hidden = false;
  $("#login-error").textContent = "";
  login.elements.token.focus();
});
login.addEventListener("submit", (event) => {
  event.preventDefault();
  storeToken(login.elements.token.value.trim());
  login.reset();
  login.hidden = true;
  following = followEvents(onEvents, showStatus);
  loadOverview();
  loadRuns();
});

function showStatus(status) {
  liveStatus.dataset.live = status;
  liveStatus.textContent = status;
}

function start() {
  for (const state of RUN_STATES) filters.elements.state.append(el("option", {}, state));
  runFilters.restore();
  filters.addEventListener("input", debounced(() => {
    pageTokens = [""];
    runFilters.save();
    loadRuns();
  }, 250));
  $("#page-older").addEventListener("click", () => turnPage(true));
  $("#page-newer").addEventListener("click", () => turnPage(false));
  following = followEvents(onEvents, showStatus);
  const linked = /^#workflow=([0-9a-f-]+)$/i.exec(location.hash);
  if (linked) workflow.show(linked[1]);
  loadOverview();
  loadActivity();
  loadRuns();
  loadWorkflows();
  setInterval(loadOverview, OVERVIEW_EVERY_MS);
  setInterval(loadActivity, ACTIVITY_EVERY_MS);
  setInterval(loadRuns, RUNS_EVERY_MS);
}

start();
