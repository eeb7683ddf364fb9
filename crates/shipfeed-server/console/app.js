// The shipfeed operator console: one page over the `/v1` API. Data is only ever written as
// text (`textContent`), never as markup, and the page loads nothing from elsewhere.

let session = null; // {name, scopes, csrf, open}

const main = () => document.getElementById("main");

/** An element with attributes (`on*` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const isAdmin = () => session !== null && session.scopes.includes("admin");

function time(value) {
  if (!value) return "—";
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? String(value) : at.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/:00Z$/, "Z");
}

function flash(message, error = false) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = error ? "error" : "";
  box.hidden = false;
}

function clearFlash() {
  document.getElementById("flash").hidden = true;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API with the session cookie; a request that changes state carries the CSRF token. */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    if (session && session.csrf) headers["X-CSRF-Token"] = session.csrf;
    if (body !== undefined) headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && !path.startsWith("/console/")) {
    session = null;
    renderSignIn("Your session has ended: sign in again.");
    throw new ApiError(401, "signed out");
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = data && data.error ? data.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

// ---- sign-in --------------------------------------------------------------------------

function renderSignIn(message) {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").replaceChildren();
  const error = h("p", { id: "sign-in-error", class: "error" }, message || "");
  const form = h(
    "form",
    { id: "sign-in", class: "card signin" },
    h("h1", {}, "Sign in"),
    h("p", {}, "Use your shipfeed API token. It is exchanged for a session cookie and not kept by this page."),
    h("p", {}, h("input", { id: "token", type: "password", name: "token", autocomplete: "current-password", placeholder: "API token", required: true })),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Sign in")),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = form.querySelector("#token").value;
    try {
      session = await api("POST", "/console/session", { token });
      form.querySelector("#token").value = "";
      signedIn();
    } catch (failure) {
      error.textContent = failure.status === 401 ? "Unknown token." : failure.message;
    }
  });
  main().replaceChildren(form);
}

function signedIn() {
  const who = document.getElementById("who");
  const label = session.open ? "open API (no token configured)" : `${session.name} · ${session.scopes.join(", ")}`;
  const signOut = session.open
    ? null
    : h("button", {
        id: "sign-out",
        onclick: async () => {
          await fetch("/console/session", { method: "DELETE", credentials: "same-origin" });
          session = null;
          renderSignIn("Signed out.");
        },
      }, "Sign out");
  who.replaceChildren(h("span", { id: "who-name" }, label), signOut || "");
  document.getElementById("nav").hidden = false;
  route();
}

// ---- pages ----------------------------------------------------------------------------

const pages = {
  shipments: shipmentsPage,
  "dead-letters": deadLettersPage,
  subscriptions: subscriptionsPage,
  health: healthPage,
  audit: auditPage,
};

function route() {
  if (!session) return;
  clearFlash();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const page = pages[path] ? path : "shipments";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === page);
  }
  const params = new URLSearchParams(query || "");
  pages[page](params).catch((failure) => {
    if (failure.status !== 401) flash(failure.message, true);
  });
}

window.addEventListener("hashchange", route);

function table(id, headings, rows) {
  return h(
    "table",
    { id },
    h("thead", {}, h("tr", {}, headings.map((heading) => h("th", {}, heading)))),
    h("tbody", {}, rows),
  );
}

// Shipments: search by tracking number or order number, state and merged timeline.

async function shipmentsPage(params) {
  const q = params.get("q") || "";
  const input = h("input", { id: "q", type: "search", name: "q", value: q, placeholder: "Tracking number or order number", autofocus: true });
  const form = h("form", { id: "search", class: "inline" }, input, h("button", { type: "submit", class: "primary" }, "Search"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/shipments?q=${encodeURIComponent(input.value.trim())}`;
  });
  const results = h("div", { id: "results" });
  main().replaceChildren(h("h1", {}, "Shipments"), form, results);
  if (!q.trim()) {
    results.append(h("p", { class: "muted" }, "Any carrier, any case; spaces are ignored."));
    return;
  }
  let found;
  try {
    found = await api("GET", `/v1/search?q=${encodeURIComponent(q)}`);
  } catch (failure) {
    if (failure.status === 404) {
      results.append(h("p", { id: "not-found" }, `No shipment with tracking number or order number “${q}”.`));
      return;
    }
    throw failure;
  }
  for (const shipment of found.shipments) results.append(shipmentCard(shipment));
}

function statusBadge(status) {
  const kind = status === "delivered" ? "good" : ["exception", "failed_attempt", "returned", "lost"].includes(status) ? "bad" : "";
  return h("span", { class: `badge ${kind}` }, status || "unmapped");
}

function shipmentCard(view) {
  const ref = view.shipment || {};
  const state = view.state || {};
  const events = new Map(view.timeline.map((event) => [event.event_id, event]));
  const rows = view.scans.map((scan) => {
    const event = events.get(scan.event_ids[0]) || {};
    const location = event.location ? [event.location.city, event.location.postal_code, event.location.country, event.location.description].filter(Boolean).join(", ") : "";
    const history = h("button", { class: "history", onclick: () => showRevisions(scan.event_ids, detail) }, "History");
    const detail = h("div", { class: "revisions" });
    return h(
      "tr",
      { class: "event", "data-event-id": scan.event_ids[0] },
      h("td", {}, time(scan.occurred_at)),
      h("td", { class: "status" }, statusBadge(event.status), event.substatus ? ` ${event.substatus}` : ""),
      h("td", { class: "providers" }, scan.seen_via.join(" + ")),
      h("td", {}, h("code", {}, event.raw && event.raw.code ? event.raw.code : "")),
      h("td", {}, event.message || (event.raw && event.raw.message) || ""),
      h("td", {}, location),
      h("td", {}, time(event.recorded_at)),
      h("td", {}, time(event.received_at)),
      h("td", {}, history, detail),
    );
  });
  return h(
    "section",
    { class: "card shipment", "data-key": view.key },
    h("h2", {}, `${ref.carrier || "unknown carrier"} · ${ref.tracking_number || view.key}`),
    h(
      "p",
      { class: "state" },
      "State: ",
      statusBadge(state.status),
      state.substatus ? ` ${state.substatus}` : "",
      ` since ${time(state.status_occurred_at)} · ${state.event_count} events`,
      state.terminal ? " · final" : "",
    ),
    h("p", { class: "muted" }, ref.order_number ? `Order ${ref.order_number} · ` : "", `key ${view.key}`, ref.tracking_url ? " · " : "", ref.tracking_url ? h("span", {}, ref.tracking_url) : ""),
    table(null, ["Occurred", "Status", "Seen via", "Raw code", "Message", "Location", "Recorded", "Received", ""], rows),
    view.retracted && view.retracted.length
      ? h("div", { class: "retracted" }, h("h3", {}, "Retracted events (no delivery yields them any more)"),
          table(null, ["Occurred", "Status", "Provider", "Event id"], view.retracted.map((event) =>
            h("tr", {}, h("td", {}, time(event.occurred_at)), h("td", {}, statusBadge(event.status)), h("td", {}, event.provider), h("td", {}, h("code", {}, event.event_id))))))
      : "",
  );
}

async function showRevisions(eventIds, into) {
  into.replaceChildren(h("span", { class: "muted" }, "Loading…"));
  const lists = [];
  for (const id of eventIds) {
    const data = await api("GET", `/v1/events/${encodeURIComponent(id)}/revisions`);
    for (const revision of data.revisions) {
      const event = revision.event;
      lists.push(h("li", {}, `${id} rev ${revision.revision} from delivery ${revision.delivery_seq}: ${event.status || "unmapped"}${event.substatus ? " " + event.substatus : ""} at ${time(event.occurred_at)}`));
    }
  }
  into.replaceChildren(h("ul", {}, lists));
}

// Dead letters: the error, the payload (admin), replay one or a selection.

async function deadLettersPage(params) {
  const data = await api("GET", "/v1/dead-letters?limit=200");
  const picked = new Set();
  const replay = h("button", { id: "replay-selected", class: "primary", disabled: true, hidden: !isAdmin(), onclick: () => replaySeqs([...picked]) }, "Replay selected");
  const rows = data.dead_letters.map((letter) => {
    const pick = h("input", { type: "checkbox", class: "pick", hidden: !isAdmin(), "aria-label": `select ${letter.delivery_seq}` });
    pick.addEventListener("change", () => {
      if (pick.checked) picked.add(letter.delivery_seq);
      else picked.delete(letter.delivery_seq);
      replay.disabled = picked.size === 0;
    });
    return h(
      "tr",
      { "data-seq": letter.delivery_seq },
      h("td", {}, pick),
      h("td", {}, h("a", { href: `#/dead-letters?seq=${letter.delivery_seq}` }, `#${letter.delivery_seq}`)),
      h("td", {}, letter.provider),
      h("td", {}, letter.endpoint),
      h("td", {}, time(letter.received_at)),
      h("td", { class: "error" }, letter.error),
    );
  });
  const body = [h("h1", {}, "Dead letters")];
  if (!rows.length) body.push(h("p", { id: "no-dead-letters", class: "muted" }, "No dead letters: every stored delivery normalized."));
  else body.push(h("div", { class: "actions" }, replay), table("dead-letters", ["", "Delivery", "Provider", "Endpoint", "Received", "Error"], rows));
  const seq = params.get("seq");
  const detail = h("div", { id: "dead-letter-detail" });
  body.push(detail);
  main().replaceChildren(...body);
  if (seq) await deadLetterDetail(Number(seq), data.dead_letters.find((letter) => letter.delivery_seq === Number(seq)), detail);
}

async function deadLetterDetail(seq, letter, into) {
  const status = await api("GET", `/v1/deliveries/${seq}`);
  const projection = status.projection || {};
  const parts = [
    h("h2", {}, `Delivery #${seq}`),
    h("p", {}, `${status.provider} via ${status.endpoint}, received ${time(status.received_at)}`),
    h("p", {}, "State: ", projection.dead_letter ? h("span", { class: "badge bad", id: "delivery-state" }, "dead letter") : h("span", { class: "badge good", id: "delivery-state" }, status.projected ? "projected" : "not yet projected")),
  ];
  const error = projection.error || (letter && letter.error);
  if (error) {
    parts.push(h("h3", {}, "Error"), h("pre", { id: "dead-letter-error" }, error));
    // The adapters name where in the payload they stopped: "... at `parcel.status.id`: ...".
    const path = /\bat `([^`]+)`/.exec(error);
    if (path) parts.push(h("p", { id: "dead-letter-path" }, "Path in the payload: ", h("code", {}, path[1])));
  }
  if (projection.event_ids && projection.event_ids.length) parts.push(h("p", {}, `Events: ${projection.event_ids.join(", ")}`));
  if (isAdmin()) {
    parts.push(h("div", { class: "actions" }, h("button", { id: "replay-one", class: "primary", onclick: () => replaySeqs([seq]) }, "Replay this delivery")));
    const raw = await api("GET", `/v1/dead-letters/${seq}/body`).catch((failure) => `(${failure.message})`);
    parts.push(h("h3", {}, "Raw body, as it arrived"), h("pre", { id: "raw-body" }, pretty(raw)));
  } else {
    parts.push(h("p", { id: "no-body", class: "muted" }, "The raw body is shown to admin tokens only: it is the provider's payload, with whatever personal data it carries."));
  }
  parts.push(h("div", { id: "replay-result" }));
  into.replaceChildren(h("section", { class: "card" }, parts));
}

function pretty(raw) {
  const text = typeof raw === "string" ? raw : JSON.stringify(raw);
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

async function replaySeqs(seqs) {
  if (!seqs.length) return;
  const result = await api("POST", "/v1/dead-letters/replay", { seqs }).catch((failure) => {
    flash(`Replay failed: ${failure.message}`, true);
    return null;
  });
  if (!result) return;
  const lines = result.deliveries.map((delivery) => `#${delivery.seq}: ${delivery.outcome}${delivery.error ? " — " + delivery.error : ""}`);
  const recovered = result.deliveries.filter((delivery) => delivery.outcome === "recovered").length;
  flash(`Replayed ${seqs.length}: ${recovered} recovered. ${lines.join("; ")}`, recovered < seqs.length);
  const query = location.hash.split("?")[1] || "";
  await deadLettersPage(new URLSearchParams(query));
  const box = document.getElementById("replay-result");
  if (box) box.replaceChildren(h("ul", { id: "replay-outcomes" }, lines.map((line) => h("li", {}, line))));
}

// Subscriptions: position, health, parked messages; pause, resume, redeliver (admin).

async function subscriptionsPage(params) {
  const data = await api("GET", "/v1/subscriptions");
  const rows = data.subscriptions.map((subscription) => {
    const push = subscription.kind === "http";
    const act = (action, label) =>
      h("button", {
        class: action,
        hidden: !isAdmin() || !push,
        onclick: async () => {
          try {
            await api("POST", `/v1/subscriptions/${encodeURIComponent(subscription.name)}/${action}`);
            await subscriptionsPage(params);
            flash(`${label}: ${subscription.name}`);
          } catch (failure) {
            if (failure.status !== 401) flash(`${label} ${subscription.name}: ${failure.message}`, true);
          }
        },
      }, label);
    const status = subscription.status;
    const kind = status === "active" ? (subscription.failing_since ? "warn" : "good") : status === "disabled" ? "bad" : "warn";
    return h(
      "tr",
      { "data-name": subscription.name },
      h("td", {}, h("a", { href: `#/subscriptions?name=${encodeURIComponent(subscription.name)}` }, subscription.name)),
      h("td", {}, subscription.kind),
      h("td", { class: "status" }, h("span", { class: `badge ${kind}` }, status), subscription.failing_since ? ` failing since ${time(subscription.failing_since)}` : ""),
      h("td", {}, subscription.reason || ""),
      h("td", {}, subscription.cursor === null ? "not started" : String(subscription.cursor)),
      h("td", { class: "lag" }, subscription.lag === undefined || subscription.lag === null ? "" : String(subscription.lag)),
      h("td", {}, subscription.pending === undefined ? "" : `${subscription.pending} pending, ${subscription.exhausted} exhausted`),
      h("td", {}, h("div", { class: "actions" }, act("pause", "Pause"), act("resume", "Resume"), act("redeliver", "Redeliver"))),
    );
  });
  const body = [h("h1", {}, "Subscriptions"), table("subscriptions", ["Name", "Kind", "Status", "Reason", "Cursor", "Lag", "Parked", ""], rows)];
  const name = params.get("name");
  if (name) {
    const messages = await api("GET", `/v1/subscriptions/${encodeURIComponent(name)}/messages?limit=100`).catch((failure) => ({ messages: [], error: failure.message }));
    body.push(h("h2", {}, `Parked messages of ${name}`));
    if (messages.error) body.push(h("p", { class: "muted" }, messages.error));
    else if (!messages.messages.length) body.push(h("p", { class: "muted" }, "None: nothing waits for a retry."));
    else
      body.push(table("messages", ["Message", "State", "Attempts", "Next attempt", "Last answer"], messages.messages.map((message) =>
        h("tr", {}, h("td", {}, h("code", {}, message.webhook_id)), h("td", {}, message.state), h("td", {}, String(message.attempts)), h("td", {}, time(message.next_attempt_at)), h("td", {}, message.last_status ? String(message.last_status) : message.last_error || "")))));
  }
  main().replaceChildren(...body);
}

// Health: projector lag, stalled shipments, unmapped codes and contract drift.

async function healthPage() {
  const [status, alerts, drift] = await Promise.all([
    api("GET", "/v1/status"),
    api("GET", "/v1/alerts?limit=200"),
    api("GET", "/v1/drift"),
  ]);
  const projector = status.projector;
  const stat = (id, label, value, note) => h("div", { class: "stat", id }, h("div", { class: "muted" }, label), h("div", { class: "value" }, value), note ? h("div", { class: "muted" }, note) : "");
  const unmapped = drift.entries.filter((entry) => entry.kind === "status_code");
  const body = [
    h("h1", {}, "Health"),
    h("div", { class: "grid" },
      stat("projector-lag", "Projector lag", `${projector.lag_deliveries} deliveries`, projector.oldest_unprojected_at ? `oldest waiting since ${time(projector.oldest_unprojected_at)}` : "nothing waiting"),
      stat("stalled-count", "Stalled shipments", String(alerts.alerts.length), alerts.next ? "more than shown" : null),
      stat("unmapped-count", "Unmapped codes", String(unmapped.length), null)),
    h("h2", {}, "Stalled shipments"),
    alerts.alerts.length
      ? table("stalled", ["Shipment", "Status", "Since", "Rule", "Order"], alerts.alerts.map((alert) =>
          h("tr", {}, h("td", {}, h("a", { href: `#/shipments?q=${encodeURIComponent(alert.shipment.tracking_number || alert.shipment_key)}` }, alert.shipment.tracking_number || alert.shipment_key)), h("td", {}, statusBadge(alert.status)), h("td", {}, time(alert.since)), h("td", {}, alert.rule), h("td", {}, alert.shipment.order_number || ""))))
      : h("p", { class: "muted" }, "No shipment has stalled."),
    h("h2", {}, "Unmapped codes and contract drift"),
    drift.entries.length
      ? table("drift", ["Provider", "Kind", "Key", "Deliveries", "First seen", "Last seen", "Sample"], drift.entries.map((entry) =>
          h("tr", {}, h("td", {}, entry.provider), h("td", {}, entry.kind), h("td", {}, h("code", {}, entry.key)), h("td", {}, String(entry.deliveries)), h("td", {}, time(entry.first_seen)), h("td", {}, time(entry.last_seen)), h("td", {}, `#${entry.sample_delivery_seq}`))))
      : h("p", { class: "muted" }, "Every code and field seen is known."),
  ];
  main().replaceChildren(...body);
}

// Audit log: every admin action, who, when, what, and how it ended.

async function auditPage() {
  const data = await api("GET", "/v1/audit?limit=200");
  main().replaceChildren(
    h("h1", {}, "Audit log"),
    data.entries.length
      ? table("audit", ["When", "Who", "Action", "Target", "Outcome", "Detail"], data.entries.map((entry) =>
          h("tr", {}, h("td", {}, time(entry.at)), h("td", {}, entry.actor), h("td", {}, entry.action), h("td", {}, entry.target), h("td", {}, h("span", { class: `badge ${entry.outcome === "ok" ? "good" : "bad"}` }, entry.outcome)), h("td", {}, h("code", {}, JSON.stringify(entry.detail))))))
      : h("p", { class: "muted" }, "No admin action yet."),
  );
}

// ---- start ----------------------------------------------------------------------------

(async () => {
  try {
    session = await api("GET", "/console/session");
    signedIn();
  } catch {
    renderSignIn("");
  }
})();
