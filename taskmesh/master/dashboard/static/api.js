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

// A master with auth on wants "Authorization: Bearer <token>". The token the operator typed into
// the login form lives in sessionStorage: this tab only, gone when the tab closes.
const TOKEN_KEY = "taskmesh.token";

export const storedToken = () => sessionStorage.getItem(TOKEN_KEY);
export const storeToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** Raised for a 401: the page shows its login form. */
export class Unauthenticated extends Error {}

function authHeaders() {
  const token = storedToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function request(path, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders(), ...(options.headers ?? {}) };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    window.dispatchEvent(new CustomEvent("taskmesh:unauthenticated"));
    throw new Unauthenticated(body.error?.message ?? "a token is required");
  }
  if (!response.ok) {
    const message = body.error?.message ?? response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

export const fetchCluster = () => request("v1/cluster");
export const fetchActivity = () => request("v1/activity");
export const fetchWorkflows = () => request("v1/workflows?limit=50");
export const fetchWorkflow = (workflowId) =>
  request(`v1/workflows/${encodeURIComponent(workflowId)}`);

/**
 * One page of the newest tasks with their latest run, filtered server-side: `state`, `region`,
 * `kind`, `search` (a piece of the name or the start of the id), `since` (RFC 3339), and the
 * `page_token` of the page to show.
 */
export function fetchTasks(filters = {}, limit = 50) {
  const query = new URLSearchParams({ limit: String(limit) });
  for (const [name, value] of Object.entries(filters)) {
    if (value) query.set(name, value);
  }
  return request(`v1/tasks?${query}`);
}

const post = (path, body) => request(path, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
});

export const setPriority = (taskId, priority) =>
  post(`v1/tasks/${encodeURIComponent(taskId)}/priority`, { priority });

export const retryTask = (taskId) => post(`v1/tasks/${encodeURIComponent(taskId)}/retry`, {});

/** Terminal states a retry may follow (not succeeded, which is done for good). */
export const RETRYABLE_STATES = new Set([
  "failed", "timed_out", "cancelled", "upstream_failed", "lost",
]);

export const fetchTask = (taskId) =>
  request(`v1/tasks/${encodeURIComponent(taskId)}?run_limit=20`);

/** A task's newest transitions (every attempt), oldest first: {events: [RunEvent JSON]}. */
export const fetchTaskEvents = (taskId) =>
  request(`v1/tasks/${encodeURIComponent(taskId)}/events`);

export const cancelTask = (taskId) =>
  post(`v1/tasks/${encodeURIComponent(taskId)}/cancel`, { reason: "cancelled from the dashboard" });

/** Trade the bearer token for the short-lived cookie that opens the event stream. */
export const openEventSession = () => request("v1/session", { method: "POST" });
