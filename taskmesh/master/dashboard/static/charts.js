// Two inline SVG charts of the last minutes (GET /v1/activity): runs finished per slice as
// bars (failures on top in red), and pickup latency p50 / p95 as lines. No library.

import { svg } from "./dom.js";

const WIDTH = 600;
const HEIGHT = 150;
const PAD = { left: 44, right: 8, top: 10, bottom: 20 };

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `value`. */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((bound) => bound >= value);
}

function frame(title, maxLabel, minutes) {
  const plotBottom = HEIGHT - PAD.bottom;
  return [
    svg("title", {}, title),
    svg("line", { x1: PAD.left, y1: plotBottom, x2: WIDTH - PAD.right, y2: plotBottom, class: "axis" }),
    svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: plotBottom, class: "axis" }),
    label(PAD.left - 4, PAD.top + 4, maxLabel, "end"),
    label(PAD.left - 4, plotBottom, "0", "end"),
    label(PAD.left, HEIGHT - 4, `-${minutes} min`, "start"),
    label(WIDTH - PAD.right, HEIGHT - 4, "now", "end"),
  ];
}

function label(x, y, text, anchor) {
  return svg("text", { x, y, "text-anchor": anchor, class: "tick" }, text);
}

const plotWidth = () => WIDTH - PAD.left - PAD.right;
const plotHeight = () => HEIGHT - PAD.top - PAD.bottom;

/** Bars of runs finished per slice; the failed part of each bar is drawn on top. */
export function throughputChart(activity) {
  const buckets = activity.buckets;
  const top = niceMax(Math.max(0, ...buckets.map((b) => b.finished)));
  const width = plotWidth() / buckets.length;
  const bars = buckets.flatMap((bucket, index) => {
    if (!bucket.finished) return [];
    const x = PAD.left + index * width;
    const height = (bucket.finished / top) * plotHeight();
    const failedHeight = (bucket.failed / top) * plotHeight();
    const y = HEIGHT - PAD.bottom - height;
    const tip = `${bucket.finished} finished (${bucket.failed} not succeeded) from ${bucket.start}`;
    return [
      svg("rect", { x, y, width: Math.max(width - 1, 1), height, class: "bar", "data-finished": bucket.finished },
        svg("title", {}, tip)),
      failedHeight ? svg("rect", { x, y, width: Math.max(width - 1, 1), height: failedHeight, class: "bar failed" }) : null,
    ].filter(Boolean);
  });
  const total = buckets.reduce((sum, b) => sum + b.finished, 0);
  const minutes = Math.round(activity.window_seconds / 60);
  return chart("throughput-chart", `runs finished per ${activity.step_seconds} s`,
    `${total} finished in ${minutes} min`, [...frame("throughput", String(top), minutes), ...bars]);
}

/** Lines of p50 and p95 pickup latency (ready -> started) per slice; gaps where none started. */
export function latencyChart(activity) {
  const buckets = activity.buckets;
  const values = buckets.flatMap((b) => [b.pickup_p50, b.pickup_p95]).filter((v) => v !== null);
  const top = niceMax(Math.max(0, ...values));
  const step = plotWidth() / buckets.length;
  const point = (index, value) => [
    PAD.left + (index + 0.5) * step,
    HEIGHT - PAD.bottom - (value / top) * plotHeight(),
  ];
  const line = (field, cls) => {
    const points = buckets.map((b, i) => (b[field] === null ? null : point(i, b[field])));
    const path = points
      .map((p, i) => (p === null ? null : `${points[i - 1] ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`))
      .filter(Boolean)
      .join(" ");
    const dots = points.filter(Boolean).map(([x, y]) => svg("circle", { cx: x, cy: y, r: 1.8, class: `dot ${cls}` }));
    return [svg("path", { d: path, class: `line ${cls}`, "data-series": field }), ...dots];
  };
  const latest = [...buckets].reverse().find((b) => b.pickup_p50 !== null);
  const summary = latest
    ? `latest p50 ${formatSeconds(latest.pickup_p50)} · p95 ${formatSeconds(latest.pickup_p95)}`
    : "no run started";
  const minutes = Math.round(activity.window_seconds / 60);
  return chart("latency-chart", "pickup latency p50 / p95 (ready → started)", summary,
    [...frame("pickup latency", formatSeconds(top), minutes), ...line("pickup_p95", "p95"), ...line("pickup_p50", "p50")]);
}

function chart(id, title, summary, children) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.id = id;
  const caption = document.createElement("figcaption");
  caption.append(title, " ");
  const note = document.createElement("span");
  note.className = "muted summary";
  note.textContent = summary;
  caption.append(note);
  figure.append(caption, svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": title }, ...children));
  return figure;
}

/** Seconds as "0.12 s", "3.4 s", "75 s". */
export function formatSeconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${value.toFixed(2)} s`;
  if (value < 10) return `${value.toFixed(1)} s`;
  return `${Math.round(value)} s`;
}

/** Replace the charts in `node` with the ones of `activity` (the body of GET /v1/activity). */
export function renderCharts(activity, node) {
  node.replaceChildren(throughputChart(activity), latencyChart(activity));
}
