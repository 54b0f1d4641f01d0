// Live run events over server-sent events (GET /v1/events/stream). The browser reconnects by
// itself and sends Last-Event-ID, so the server resumes the log where this page left it.

/**
 * Call `onEvents(events)` with each batch; `onStatus` gets "live", "reconnecting" or "polling".
 * Returns the EventSource, or null when the browser has none (the page then only polls).
 */
export function followEvents(onEvents, onStatus) {
  if (!("EventSource" in window)) {
    onStatus("polling");
    return null;
  }
  const source = new EventSource("v1/events/stream");
  source.addEventListener("open", () => onStatus("live"));
  source.addEventListener("error", () => onStatus("reconnecting"));
  source.addEventListener("runs", (message) => onEvents(JSON.parse(message.data).events));
  return source;
}
