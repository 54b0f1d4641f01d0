// The runs filters (state, region, kind, task, creation time) and their place in the address:
// `?state=failed&kind=etl&since=3600` restores the same view on a reload, a bookmark or a link
// someone shared. `since` is a preset window in seconds, or an instant (RFC 3339) picked with
// "after…".
import { shortEnum } from "./api.js";
import { el } from "./dom.js";

const TEXT_FIELDS = ["state", "region", "kind", "search"];
const CUSTOM = "custom";

/** An instant as the value of a datetime-local input (local wall clock, to the second). */
function localInputValue(instant) {
  const shifted = new Date(instant.getTime() - instant.getTimezoneOffset() * 60000);
  return shifted.toISOString().slice(0, 19);
}

export class RunFilters {
  constructor(form) {
    this.form = form;
    form.addEventListener("submit", (event) => event.preventDefault());
    form.elements.since.addEventListener("input", () => this.showCustom());
  }

  /** Set the controls from the address's query (unknown state names are ignored). */
  restore(search = location.search) {
    const query = new URLSearchParams(search);
    const fields = this.form.elements;
    for (const name of TEXT_FIELDS) {
      const value = query.get(name) ?? "";
      const field = fields[name];
      if (name === "region" && value && ![...field.options].some((o) => o.value === value)) {
        field.append(el("option", {}, value)); // the overview adds the others once it loads
      }
      field.value = value;
    }
    this.restoreSince(query.get("since") ?? "");
    this.showCustom();
  }

  restoreSince(value) {
    const { since, since_at: sinceAt } = this.form.elements;
    const preset = [...since.options].some((option) => option.value === value && value !== CUSTOM);
    const instant = new Date(value);
    if (preset || !value) since.value = value;
    else if (!Number.isNaN(instant.getTime())) {
      since.value = CUSTOM;
      sinceAt.value = localInputValue(instant);
    } else since.value = "";
  }

  showCustom() {
    this.form.elements.since_at.hidden = this.form.elements.since.value !== CUSTOM;
  }

  /** The filters for GET /v1/tasks, `since` as an RFC 3339 instant. */
  values() {
    const values = Object.fromEntries(TEXT_FIELDS.map((name) => [name, this.form.elements[name].value]));
    values.since = this.sinceInstant();
    return values;
  }

  sinceInstant() {
    const { since, since_at: sinceAt } = this.form.elements;
    if (since.value === CUSTOM) {
      return sinceAt.value ? new Date(sinceAt.value).toISOString() : "";
    }
    const seconds = Number(since.value);
    return seconds ? new Date(Date.now() - seconds * 1000).toISOString() : "";
  }

  /** Write the filters into the address without a new history entry. */
  save() {
    const query = new URLSearchParams();
    for (const name of TEXT_FIELDS) {
      const value = this.form.elements[name].value;
      if (value) query.set(name, value);
    }
    const since = this.form.elements.since.value;
    if (since === CUSTOM) {
      const instant = this.sinceInstant();
      if (instant) query.set("since", instant);
    } else if (since) query.set("since", since);
    const text = query.toString();
    const address = `${location.pathname}${text ? `?${text}` : ""}${location.hash}`;
    if (address !== `${location.pathname}${location.search}${location.hash}`) {
      history.replaceState(null, "", address);
    }
  }

  /** Whether a run event about a task not on the page could bring it into this view. */
  mayJoin(event) {
    const state = this.form.elements.state.value;
    return !state || shortEnum(event.to_state, "RUN_STATE_") === state;
  }

  /** Whether rows on the page can leave it when their run changes state. */
  get narrowedByState() {
    return Boolean(this.form.elements.state.value);
  }
}
