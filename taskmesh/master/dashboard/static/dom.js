// Small helpers to build DOM nodes (text always goes through textContent, never innerHTML)
// and to format instants and ages.

/** el("td", {class: "num"}, "42") -> <td class="num">42</td>; null children are skipped. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** svg("rect", {x: 1}) -> an SVG element (SVG needs its namespace); text children become nodes. */
export function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A coloured state badge; `data-state` picks the colour in the stylesheet. */
export const badge = (state) => el("span", { class: "state", "data-state": state }, state || "—");

/** An RFC 3339 instant as local time: "14:03:07", with the date when not today. */
export function formatInstant(text) {
  if (!text) return "";
  const instant = new Date(text);
  const time = instant.toLocaleTimeString([], { hour12: false });
  const today = new Date().toDateString() === instant.toDateString();
  return today ? time : `${instant.toLocaleDateString()} ${time}`;
}

/** Seconds as a short age: "0.4 s", "12 s", "3 min", "2 h". */
export function formatAge(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  if (seconds < 10) return `${Math.max(seconds, 0).toFixed(1)} s`;
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

/** Seconds from instant `earlier` to instant `later` (RFC 3339 texts). */
export const secondsBetween = (earlier, later) => (Date.parse(later) - Date.parse(earlier)) / 1000;
