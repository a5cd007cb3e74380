// Live event view: fills #live-events from the server-sent events at its
// data-src. Values are inserted as text (textContent), never as HTML.
"use strict";
(function () {
  const table = document.getElementById("live-events");
  if (!table) return;
  const body = table.tBodies[0];
  const status = document.getElementById("live-status");
  const say = (state, text) => {
    table.dataset.state = state;
    if (status) status.textContent = text;
  };
  const source = new EventSource(table.dataset.src);
  source.addEventListener("ready", () => say("live", "live"));
  source.addEventListener("interrupted", (m) => {
    say("interrupted", JSON.parse(m.data).problem);
    source.close();
  });
  source.addEventListener("amai", (m) => {
    const e = JSON.parse(m.data);
    const row = document.createElement("tr");
    row.className = e.verified ? "verified" : "flagged";
    row.dataset.seq = String(e.seq);
    const cells = [
      e.verified ? "\u2713" : "\u26a0 " + e.problem,
      e.published,
      e.stream + " #" + e.seq,
      e.type,
      e.aggregate + (e.aggregate_seq > 0 ? " @" + e.aggregate_seq : ""),
      e.actor,
      e.hash.slice(0, 12),
      e.summary,
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      row.appendChild(td);
    }
    row.cells[6].title = e.hash;
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 500) body.deleteRow(-1);
  });
  source.onerror = () => say("reconnecting", "reconnecting\u2026");
})();
