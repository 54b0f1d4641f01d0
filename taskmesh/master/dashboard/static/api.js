// The master's /v1 endpoints, and the wire's enum names made short ("RUN_STATE_FAILED" -> "failed").
// Paths are relative to the page, so the dashboard also works behind a path-prefix proxy.

export const RUN_STATES = [
  "blocked", "pending", "delegated", "assigned", "running",
  "succeeded", "failed", "timed_out", "cancelled", "upstream_failed", "lost",
];
export const TERMINAL_STATES = new Set([
  "succeeded", "failed", "timed_out", "cancelled", "upstream_failed", "lost",
]);

/** "RUN_STATE_TIMED_OUT" -> "timed_out"; a missing value -> "". */
export function shortEnum(value, prefix) {
  if (!value) return "";
  return value.startsWith(prefix) ? value.slice(prefix.length).toLowerCase() : value;
}

async function request(path, options = {}) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.error?.message ?? response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

export const fetchCluster = () => request("v1/cluster");

/** Newest tasks with their latest run, filtered server-side. */
export function fetchTasks({ state = "", region = "", limit = 100 } = {}) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (state) query.set("state", state);
  if (region) query.set("region", region);
  return request(`v1/tasks?${query}`);
}

export const fetchTask = (taskId) =>
  request(`v1/tasks/${encodeURIComponent(taskId)}?run_limit=20`);

export const cancelTask = (taskId) =>
  request(`v1/tasks/${encodeURIComponent(taskId)}/cancel`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ reason: "cancelled from the dashboard" }),
  });
