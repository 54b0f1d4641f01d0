// The cluster overview: run totals by state, and one card per region (the region map): its
// figures, the master's breaker towards it, spillover, held-back task kinds and its workers.
import { RUN_STATES, shortEnum } from "./api.js";
import { badge, el, formatAge, secondsBetween } from "./dom.js";

/** Replace the totals and region cards with `overview` (the body of GET /v1/cluster). */
export function renderOverview(overview, totalsNode, regionsNode) {
  totalsNode.replaceChildren(...totals(overview));
  const age = (instant) => (instant ? secondsBetween(instant, overview.observed_at) : NaN);
  regionsNode.replaceChildren(...overview.regions.map((region) => regionCard(region, age)));
}

function totals({ run_states: counts = {} }) {
  const known = RUN_STATES.filter((state) => counts[state]);
  const chips = known.map((state) =>
    el("span", { class: "total", "data-total": state }, badge(state), el("b", {}, counts[state])));
  const all = known.reduce((sum, state) => sum + counts[state], 0);
  return [...chips, el("span", { class: "muted" }, `${all} runs, every attempt, exact`)];
}

/**
 * A breaker as a badge. The cluster JSON may give a bare enum ("BREAKER_STATE_OPEN"), an object
 * {state, failures, opened_at}, or nothing (older masters): all are shown, none is required.
 */
export function breakerBadge(breaker, age) {
  if (!breaker) return el("span", { class: "muted breaker" }, "—");
  const detail = typeof breaker === "object" ? breaker : { state: breaker };
  const state = breakerState(breaker);
  const notes = [];
  if (detail.failures) notes.push(`${detail.failures} failures`);
  if (detail.opened_at && state !== "closed") notes.push(`opened ${formatAge(age(detail.opened_at))} ago`);
  return el("span", { class: "breaker", "data-breaker": state, title: notes.join(", ") || null },
    badge(state), notes.length ? el("small", { class: "muted" }, ` ${notes.join(" · ")}`) : null);
}

function regionCard(region, age) {
  const workers = region.workers ?? [];
  const breaker = region.breaker;
  const figures = [
    ["credit", region.credit ?? 0],
    ["queue", queueFigure(region)],
    ["running", `${region.running ?? 0} / ${region.total_slots ?? 0}`],
    ["heartbeat", formatAge(age(region.heartbeat_at))],
    ["breaker", breakerBadge(breaker, age)],
  ];
  const spill = spillover(region);
  if (spill) figures.push(["spillover", spill]);
  if (region.fallbacks?.length) figures.push(["falls back to", region.fallbacks.join(" → ")]);
  return el("article", {
    class: "region", "data-region": region.name, "data-breaker": breakerState(breaker),
  },
    el("header", {},
      el("h3", {}, region.name),
      badge(shortEnum(region.state, "REGION_STATE_")),
      region.reachable ? null : el("span", { class: "muted" }, "not answering")),
    el("dl", {}, ...figures.map(([name, value]) => // a pair never wraps apart
      el("div", {}, el("dt", {}, name), el("dd", { "data-figure": name }, value)))),
    kindList(region.kinds ?? [], age),
    workerTable(workers, age));
}

const QUEUE_PRIORITIES_SHOWN = 4;

/** The queue depth, and how it splits by priority (highest first): "12 (p10 3 · p0 9)". */
function queueFigure(region) {
  const split = region.queue_by_priority ?? [];
  const parts = split.slice(0, QUEUE_PRIORITIES_SHOWN).map(({ priority, runs }) =>
    el("span", { "data-priority": priority }, `p${priority} ${runs}`));
  if (split.length > QUEUE_PRIORITIES_SHOWN) parts.push("…");
  const joined = parts.flatMap((part, index) => (index ? [" · ", part] : [part]));
  return el("span", { class: "queue" }, String(region.queue_depth ?? 0),
    joined.length ? el("small", { class: "muted by-priority" }, " (", ...joined, ")") : null);
}

/** A breaker's short state ("open"), whatever shape the JSON gave it in (see breakerBadge). */
function breakerState(breaker) {
  const state = typeof breaker === "object" && breaker !== null ? breaker.state : breaker;
  return shortEnum(state, "BREAKER_STATE_") || "unknown";
}

/** "3 out · 0 in (5 min)" while runs spill over, else null. */
function spillover(region) {
  const spill = region.spillover;
  if (!spill || (!spill.in && !spill.out)) return null;
  const span = formatAge(spill.window_seconds ?? NaN);
  return el("span", { class: "spill", title: `runs delegated to or from a fallback region in the last ${span}` },
    `${spill.out ?? 0} out · ${spill.in ?? 0} in (${span})`);
}

/** The task kinds whose breaker is not closed or that hold runs back; null when there are none. */
function kindList(kinds, age) {
  const notable = kinds.filter((kind) => kind.state !== "closed" || kind.waiting);
  if (!notable.length) return null;
  return el("ul", { class: "kinds", "aria-label": "task kinds held back" },
    ...notable.map((kind) => el("li", { "data-kind": kind.kind },
      el("span", { class: "mono" }, kind.kind), " ", breakerBadge(kind, age),
      kind.waiting ? el("small", { class: "muted" }, ` ${kind.waiting} waiting`) : null)));
}

function workerTable(workers, age) {
  const head = el("tr", {}, ...["Worker", "Slots", "Load", "Heartbeat", "State", "Breaker"]
    .map((title) => el("th", {}, title)));
  const rows = workers.map((worker) => {
    const slots = worker.slots ?? 0;
    const running = worker.running ?? 0;
    const share = slots ? Math.min(running / slots, 1) : 0;
    return el("tr", { "data-worker": worker.id },
      el("td", { class: "mono" }, worker.id),
      el("td", { class: "num" }, slots),
      el("td", {}, el("span", { class: "load" }, el("span", { style: `width:${share * 100}%` })),
        `${running}/${slots}`),
      el("td", {}, formatAge(age(worker.heartbeat_at))),
      el("td", {}, badge(shortEnum(worker.state, "WORKER_STATE_"))),
      el("td", {}, breakerBadge(worker.breaker, age)));
  });
  const empty = el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no workers registered"));
  return el("table", { class: "grid" }, el("thead", {}, head),
    el("tbody", {}, ...(rows.length ? rows : [empty])));
}
