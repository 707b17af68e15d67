// The console's home: the queue at a glance, polled every second, and a playground that runs one job
// and streams its answer.
//
// The playground keeps its job in sessionStorage (its ID, events URL, the last event's seq and the text
// so far, written together after every event), so a reload picks the same stream up after that event:
// nothing shown twice, nothing missed. Within one page load, the EventSource resumes by itself.

import { $, EventList, ago, api, describe, duration, follow, h, seconds, signIn } from "./console.js";

const POLL_MS = 1000;
const HISTORY = 120; // samples per sparkline: the last two minutes
const PLAYGROUND_ITEM = "arkq.playground";

// --- The queue view ------------------------------------------------------------------------------------

const count = (value) => String(value);
/** What each card shows, and the smallest top of its chart (so a flat zero sits on the floor). */
const METRICS = [
  { name: "queued", show: count, floor: 1 },
  { name: "deferred", show: count, floor: 1 },
  { name: "running", show: count, floor: 1 },
  { name: "workers_alive", show: count, floor: 1 },
  { name: "tokens_per_s", show: (value) => value.toFixed(1), floor: 1 },
  { name: "queue_time_s", show: seconds, floor: 0.01 },
];
const history = Object.fromEntries(METRICS.map((metric) => [metric.name, []]));

async function poll() {
  const note = $("#status-note");
  try {
    const status = await api("/v1/status");
    showStatus(status);
    note.textContent = `live · ${new Date(status.at * 1000).toLocaleTimeString([], { hour12: false })}`;
    note.dataset.state = "live";
  } catch (error) {
    note.textContent = `status unavailable: ${error.message}`;
    note.dataset.state = "down";
    for (const metric of METRICS) record(metric, null);
  }
  setTimeout(poll, POLL_MS);
}

function showStatus(status) {
  $("#queue-name").textContent = status.queue;
  for (const metric of METRICS) record(metric, status[metric.name]);
  showWorkers(status);
  showFailures(status);
}

function record(metric, value) {
  const values = history[metric.name];
  values.push(value ?? null);
  if (values.length > HISTORY) values.shift();
  const card = $(`#metric-${metric.name}`);
  if (value !== null && value !== undefined) $("output", card).textContent = metric.show(value);
  else if (metric.name === "queue_time_s") $("output", card).textContent = "–";
  const known = values.filter((v) => v !== null);
  const top = Math.max(metric.floor, ...known);
  $(".top", card).textContent = known.length ? `max ${metric.show(top)}` : "";
  sparkline($("svg", card), values, top);
}

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 32;

/** The values as a line over a shaded area, newest on the right; a gap where a reading is missing. */
function sparkline(svg, values, top) {
  const step = WIDTH / (HISTORY - 1);
  const segments = [];
  let segment = null;
  values.forEach((value, index) => {
    if (value === null) {
      segment = null;
      return;
    }
    const x = WIDTH - (values.length - 1 - index) * step;
    const y = HEIGHT - 1 - (value / top) * (HEIGHT - 2);
    if (segment === null) segments.push((segment = []));
    segment.push(`${x.toFixed(2)} ${y.toFixed(2)}`);
  });
  const line = segments.map((points) => `M${points.join(" L")}`).join(" ");
  const area = segments
    .map((points) => `M${points[0].split(" ")[0]} ${HEIGHT} L${points.join(" L")} L${points.at(-1).split(" ")[0]} ${HEIGHT} Z`)
    .join(" ");
  let [fill, stroke] = svg.children;
  if (!stroke) {
    fill = document.createElementNS(SVG, "path");
    stroke = document.createElementNS(SVG, "path");
    fill.setAttribute("class", "area");
    stroke.setAttribute("class", "line");
    svg.append(fill, stroke);
  }
  fill.setAttribute("d", area);
  stroke.setAttribute("d", line);
}

function showWorkers(status) {
  const rows = status.workers.map((worker) => {
    const alive = status.at - worker.seen_at <= 3 * worker.interval_s + 1;
    return h(
      "tr",
      { "data-worker": worker.name, class: alive ? "alive" : "gone" },
      h(
        "td",
        { title: `${worker.host}, process ${worker.pid}` },
        h("span", { class: "dot", title: alive ? "alive" : "silent" }),
        h("code", { text: worker.name }),
      ),
      h("td", { text: worker.model }),
      h("td", { class: "num", text: `${worker.running} / ${worker.max_jobs}` }),
      h("td", { class: "num", text: worker.jobs_ended }),
      h("td", { class: "num", text: worker.tokens }),
      h("td", { class: "num", text: worker.tokens_per_s.toFixed(1) }),
      h("td", { class: "num", text: seconds(worker.queue_time_s) }),
      h("td", { class: "num", text: duration(status.at - worker.started_at) }),
      h("td", { class: "num", text: alive ? ago(worker.seen_at, status.at) : `silent ${ago(worker.seen_at, status.at)}` }),
    );
  });
  if (rows.length === 0) rows.push(emptyRow(9, "No worker has reported yet."));
  $("#workers tbody").replaceChildren(...rows);
}

function showFailures(status) {
  // A gateway with keys tells the failures by kind, count and time only: the job and its message may
  // be another tenant's.
  const rows = status.failures.map((group) =>
    h(
      "tr",
      { "data-kind": group.kind },
      h("td", {}, h("code", { text: group.kind })),
      h("td", { class: "num", text: group.count }),
      h("td", { class: "num", text: ago(group.last_at, status.at) }),
      h("td", { class: "message", text: group.last_message || "–" }),
      h(
        "td",
        {},
        group.last_job_id
          ? h("a", { href: `/jobs/${encodeURIComponent(group.last_job_id)}`, text: group.last_job_id })
          : "–",
      ),
    ),
  );
  if (rows.length === 0) rows.push(emptyRow(5, "No failed jobs."));
  $("#failures tbody").replaceChildren(...rows);
  const withheld = status.failures.length > 0 && status.failures.every((group) => !group.last_job_id);
  $("#failures-withheld").hidden = !withheld;
  $("#failures").classList.toggle("withheld", withheld);
}

function emptyRow(columns, text) {
  return h("tr", { class: "empty" }, h("td", { colspan: columns, text }));
}

// --- The playground ------------------------------------------------------------------------------------

/** The playground's job, as kept in sessionStorage: everything needed to draw it and to resume it. */
let job = null;
let source = null;
let events = null;

function save() {
  sessionStorage.setItem(PLAYGROUND_ITEM, JSON.stringify(job));
}

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16)); // crypto.randomUUID needs https
  return `console-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

function request() {
  const prompt = $("#prompt").value;
  const schemaText = $("#schema").value.trim();
  const maxTokens = $("#max-tokens").value;
  const body = { messages: [{ role: "user", content: prompt }] };
  if (maxTokens) body.max_tokens = Number(maxTokens);
  if (schemaText) {
    let schema;
    try {
      schema = JSON.parse(schemaText);
    } catch (error) {
      throw new Error(`The JSON schema is not JSON: ${error.message}`);
    }
    const title = typeof schema.title === "string" && /^[\w-]{1,64}$/.test(schema.title) ? schema.title : "answer";
    body.response_format = { type: "json_schema", json_schema: { name: title, schema } };
  }
  return { body, form: { prompt, schema: $("#schema").value, maxTokens } };
}

async function run(submitted) {
  submitted.preventDefault();
  $("#play-message").textContent = "";
  let asked;
  try {
    asked = request();
  } catch (error) {
    $("#play-message").textContent = error.message;
    return;
  }
  if (source) source.close();
  source = null;
  // The Idempotency-Key is kept before the request goes: a reload before the answer sends the same
  // request again and gets the same job, not a second one.
  job = { pending: { key: randomKey(), body: asked.body }, form: asked.form };
  save();
  await enqueue();
}

async function enqueue() {
  draw();
  try {
    const created = await api("/v1/jobs", {
      method: "POST",
      body: job.pending.body,
      headers: { "Idempotency-Key": job.pending.key },
    });
    Object.assign(job, {
      pending: null,
      id: created.id,
      eventsUrl: created.events_url,
      seq: -1,
      text: "",
      reasoning: "",
      rows: [],
      status: created.status === "running" ? "running" : "queued",
      detail: "",
    });
  } catch (error) {
    job = { form: job.form, status: "refused", detail: error.message, rows: [] };
    $("#play-message").textContent = `Not enqueued: ${error.message}`;
  }
  save();
  draw();
  if (job.id) stream();
}

function ended() {
  return ["done", "error", "cancelled", "lost"].includes(job?.status);
}

function stream() {
  source = follow(job.eventsUrl, job.seq, {
    onEvent(event) {
      job.seq = event.seq;
      events.add(event);
      switch (event.type) {
        case "started":
          setStatus("running", describe(event));
          break;
        case "token":
          job.text += event.text;
          $("#answer").append(event.text);
          break;
        case "reasoning":
          job.reasoning += event.text;
          $("#reasoning").hidden = false;
          $("#reasoning").append(event.text);
          break;
        case "reset": // the attempt starts over: what it showed is void
          job.text = "";
          job.reasoning = "";
          $("#answer").textContent = "";
          $("#reasoning").textContent = "";
          break;
        case "done":
        case "error":
        case "cancelled":
          setStatus(event.type, describe(event));
          break;
      }
      save();
      if (ended()) controls();
    },
    onNote(text) {
      events.note(text);
      save();
    },
    async onClosed() {
      // Refused or gone without an end seen here: ask what became of the job.
      try {
        const found = await api(`/v1/jobs/${encodeURIComponent(job.id)}`);
        if (found.status === "done" || found.status === "error" || found.status === "cancelled") {
          setStatus(found.status, found.error ? `${found.error.kind}: ${found.error.message}` : "");
        } else {
          setStatus("lost", `its event stream closed while it was ${found.status}`);
        }
      } catch (error) {
        setStatus("lost", error.message);
      }
      save();
      controls();
    },
  });
}

function setStatus(status, detail) {
  job.status = status;
  job.detail = detail;
  $("#play-status").dataset.status = status;
  $("#play-status").textContent = status;
  $("#play-detail").textContent = detail;
}

async function cancel() {
  $("#cancel").disabled = true;
  $("#play-status").textContent = "cancelling…";
  try {
    // The job's `cancelled` event (or its end, if it was ending anyway) arrives on the stream.
    await api(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
  } catch (error) {
    $("#play-message").textContent = `Cancel failed: ${error.message}`;
    $("#cancel").disabled = false;
  }
}

/** Draw the playground from `job`, as after a reload. */
function draw() {
  controls();
  $("#answer").textContent = job?.text || "";
  $("#reasoning").textContent = job?.reasoning || "";
  $("#reasoning").hidden = !job?.reasoning;
  events = new EventList($("#play-events"), job?.rows || []);
}

/** The buttons, the status and the job's link. */
function controls() {
  const active = job !== null && !ended() && job.status !== "refused";
  $("#run").disabled = active;
  $("#cancel").disabled = !(active && job.id);
  const status = job === null ? "idle" : job.pending ? "sending" : job.status;
  $("#play-status").dataset.status = status;
  $("#play-status").textContent = status;
  $("#play-detail").textContent = job?.detail || "";
  const link = $("#play-job");
  link.hidden = !job?.id;
  if (job?.id) {
    link.href = `/jobs/${encodeURIComponent(job.id)}`;
    link.textContent = job.id;
  }
}

function startPlayground() {
  $("#play-form").addEventListener("submit", run);
  $("#cancel").addEventListener("click", cancel);
  try {
    job = JSON.parse(sessionStorage.getItem(PLAYGROUND_ITEM));
  } catch {
    job = null;
  }
  if (job?.form) {
    $("#prompt").value = job.form.prompt;
    $("#schema").value = job.form.schema;
    $("#max-tokens").value = job.form.maxTokens;
    if (job.form.schema.trim()) $("#schema-box").open = true;
  }
  draw();
  if (job?.pending) enqueue();
  else if (job?.id && !ended()) stream();
}

signIn(() => {
  poll();
  startPlayground();
});
