// Live run events over server-sent events (GET /v1/events/stream). The browser reconnects by
// itself and sends Last-Event-ID, so the server resumes the log where this page left it.
//
// EventSource cannot send an Authorization header. With a token stored, the page first trades
// it for a short-lived HttpOnly ticket cookie (POST v1/session) that opens only the stream, and
// renews it well before it expires; if the stream is refused anyway (ticket expired, master
// restarted) the page gets a new ticket and opens a new stream.
import { openEventSession, storedToken } from "./api.js";

const RENEW_EVERY_MS = 120000; // tickets last 300 s
const REOPEN_AFTER_MS = 2000;

/**
 * Call `onEvents(events)` with each batch; `onStatus` gets "live", "reconnecting" or "polling".
 * Returns a function that stops following, or null when the browser has no EventSource.
 */
export function followEvents(onEvents, onStatus) {
  if (!("EventSource" in window)) {
    onStatus("polling");
    return null;
  }
  let source = null;
  let stopped = false;
  const renew = async () => {
    if (storedToken()) await openEventSession().catch(() => onStatus("reconnecting"));
  };
  const open = async () => {
    await renew();
    if (stopped) return;
    source = new EventSource("v1/events/stream");
    source.addEventListener("open", () => onStatus("live"));
    source.addEventListener("error", () => {
      onStatus("reconnecting");
      // CLOSED: the server refused the stream (the browser gives up): reopen with a new ticket.
      if (source.readyState === EventSource.CLOSED) setTimeout(open, REOPEN_AFTER_MS);
    });
    source.addEventListener("runs", (message) => onEvents(JSON.parse(message.data).events));
  };
  const renewal = setInterval(renew, RENEW_EVERY_MS);
  open();
  return () => {
    stopped = true;
    clearInterval(renewal);
    source?.close();
  };
}
