// One job's page (`/jobs/{id}`): its status, timings and result or error from `GET /v1/jobs/{id}`, and
// its events replayed from the first (live, while it runs) through its events URL.

import { $, EventList, TERMINAL, api, clock, describe, follow, h, seconds, signIn } from "./console.js";

const id = decodeURIComponent(location.pathname.replace(/^\/jobs\//, ""));
/** The job as last read from the API. */
let current = null;

const ended = (job) => TERMINAL.has(job.status);

async function load() {
  document.title = `${id} · arkq`;
  $("#job-id").textContent = id;
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (error) {
    if (error.status === 404) {
      showStatus("unknown", "No such job here: it never existed, its records have expired, or another key owns it.");
    } else {
      showStatus("unknown", `The job cannot be read: ${error.message}`);
    }
    return;
  }
  show(job);
  const events = new EventList($("#job-events"));
  follow(job.events_url, -1, {
    onEvent(event) {
      events.add(event);
      // The text as it streams; for a job that ended without an answer, what it said before it ended.
      if (!current.result && event.type === "token") $("#answer").append(event.text);
      if (!current.result && event.type === "reset") $("#answer").textContent = "";
      partial();
      if (ended(current)) return; // replaying a job that has ended: its status is on the page
      if (event.type === "started") showStatus("running", describe(event));
      else if (TERMINAL.has(event.type)) {
        // The result is stored before the end is published: read it now.
        api(`/v1/jobs/${encodeURIComponent(id)}`).then(show, (error) => showStatus(event.type, error.message));
      }
    },
    onNote: (note) => events.note(note),
    onClosed() {
      if (events.rows.length === 0) events.note("Its events are no longer kept.");
    },
  });
  $("#cancel").addEventListener("click", async () => {
    $("#cancel").disabled = true;
    try {
      show(await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }));
    } catch (error) {
      showStatus(current.status, `Cancel failed: ${error.message}`);
    }
  });
}

function showStatus(status, detail) {
  $("#job-status").dataset.status = status;
  $("#job-status").textContent = status;
  $("#job-detail").textContent = detail || "";
}

/** Say so when the text shown is not an answer but what a job that failed or was cancelled streamed. */
function partial() {
  $("#answer-note").hidden = !ended(current) || Boolean(current.result) || !$("#answer").textContent;
}

/** Draw the `arkq.job` object: status, timings, and the result or the error once it has ended. */
function show(job) {
  current = job;
  showStatus(job.status, ended(job) ? "" : $("#job-detail").textContent);
  $("#cancel").hidden = ended(job);
  const timings = job.timings || {};
  const rows = [
    ["Enqueued", clock(timings.enqueued_at ?? job.created_at)],
    ["Started", clock(timings.started_at)],
    ["First token", clock(timings.first_token_at)],
    ["Finished", clock(timings.finished_at)],
    ["Time in queue", seconds(timings.queued_s)],
    ["Time to first token", seconds(timings.ttft_s)],
    ["Total", seconds(timings.total_s)],
  ];
  $("#timings tbody").replaceChildren(
    ...rows.map(([name, value]) =>
      h("tr", { "data-timing": name }, h("th", { text: name }), h("td", { class: "num", text: value })),
    ),
  );
  partial();
  if (job.result) {
    const result = job.result;
    $("#answer").textContent = result.text ?? "";
    $("#answer").dataset.final = "";
    const usage = result.usage || {};
    const facts = [
      ["finish reason", result.finish_reason],
      ["prompt tokens", usage.prompt_tokens],
      ["completion tokens", usage.completion_tokens],
      ["attempts", result.attempts],
    ].filter(([, value]) => value !== undefined && value !== null);
    $("#result-facts").replaceChildren(
      ...facts.map(([name, value]) => h("li", {}, h("span", { text: name }), h("strong", { text: value }))),
    );
    $("#parsed").hidden = result.parsed === null || result.parsed === undefined;
    $("#parsed pre").textContent = JSON.stringify(result.parsed, null, 2);
    $("#reasoning").hidden = !result.reasoning;
    $("#reasoning pre").textContent = result.reasoning || "";
    $("#tool-calls").hidden = !result.tool_calls?.length;
    $("#tool-calls pre").textContent = JSON.stringify(result.tool_calls, null, 2);
  }
  if (job.error) {
    $("#error").hidden = false;
    $("#error-kind").textContent = job.error.kind;
    $("#error-message").textContent = job.error.message;
    const retry = job.error.retryable
      ? `Retryable${job.error.retry_after ? `, after ${seconds(job.error.retry_after)}` : ""}.`
      : "Not retryable.";
    $("#error-retry").textContent = retry;
  }
  if (job.status === "cancelled") $("#error").hidden = true;
}

signIn(load);
