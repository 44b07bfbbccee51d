// Live API messages of a running execution, from the portal's event stream.
// The page is complete without this script, which only adds rows and totals
// as server-sent events arrive and stops at the execution_finished event.
(function () {
  "use strict";
  var table = document.getElementById("messages");
  if (!table || !table.dataset.eventsUrl || !window.EventSource) { return; }
  var state = document.getElementById("stream-state");
  var empty = document.getElementById("no-messages");
  // Status labels and explanations, rendered by the server into the page.
  var texts = JSON.parse(document.getElementById("status-texts").textContent);

  function cells(m) {
    var notes = [];
    if (m.parent_tool_use_id) { notes.push("subagent"); }
    if (m.estimated) { notes.push("estimated"); }
    if (!m.complete) { notes.push("in progress"); }
    return [m.sequence, m.message_id, m.model, m.input_tokens, m.output_tokens,
      m.cache_write_5m_tokens + m.cache_write_1h_tokens, m.cache_read_tokens,
      notes.join(" ")];
  }

  function showStatus(status) {
    var element = document.getElementById("execution-status");
    element.textContent = texts.labels[status] || status;
    element.className = "status status-" + status;
    document.getElementById("status-explanation").textContent =
      texts.explanations[status] || "";
  }

  function number(value) {
    return typeof value === "number" ? value.toLocaleString("en-US") : value;
  }

  var source = new EventSource(table.dataset.eventsUrl);
  source.onopen = function () { state.textContent = "live"; };
  source.onerror = function () { state.textContent = "reconnecting"; };
  source.addEventListener("api_message", function (event) {
    var message = JSON.parse(event.data);
    var row = document.getElementById("message-" + message.message_id);
    if (!row) {
      row = table.tBodies[0].insertRow();
      row.id = "message-" + message.message_id;
    }
    row.replaceChildren();
    cells(message).forEach(function (value, index) {
      var cell = row.insertCell();
      cell.textContent = number(value);
      if (index !== 1 && index !== 2 && index !== 7) { cell.className = "number"; }
    });
    if (empty) { empty.hidden = true; }
    showStatus("running");
  });
  source.addEventListener("execution_finished", function (event) {
    var data = JSON.parse(event.data);
    document.querySelectorAll("[data-summary]").forEach(function (element) {
      var key = element.dataset.summary;
      if (key !== "status" && data.summary[key] !== undefined) {
        element.textContent = number(data.summary[key]);
      }
    });
    showStatus(data.status);
    state.textContent = "finished";
    source.close();
  });
})();
