// The status page's script: polls /status.json every POLL_MS and redraws. Everything the node
// sends is written with textContent, never parsed as HTML.
//
// The page states its health in the DOM so a headless browser (and a human) can tell: the body
// gets data-ok="1" only after a document was fetched and drawn without error; any script error
// or failed fetch shows in #error and sets data-error="1" instead. A failed fetch clears once a
// later one succeeds (the node may restart); a script error stays until the page is reloaded.
"use strict";

(function () {
  const POLL_MS = 2000;
  const OUTCOMES = ["ok", "not_found", "unavailable", "indeterminate", "rejected"];
  let previous = null;
  let broken = false;

  function fail(text) {
    const box = document.getElementById("error");
    box.textContent = text;
    box.hidden = false;
    document.body.removeAttribute("data-ok");
    document.body.setAttribute("data-error", "1");
  }

  window.addEventListener("error", function (event) {
    broken = true;
    fail("script error: " + event.message + " (" + event.filename + ":" + event.lineno + ")");
  });
  window.addEventListener("unhandledrejection", function (event) {
    broken = true;
    fail("script error: " + event.reason);
  });

  function text(id, value) {
    document.getElementById(id).textContent = String(value);
  }

  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "–" : String(value);
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function milliseconds(value) {
    return value === null || value === undefined ? "–" : value.toFixed(2) + " ms";
  }

  function definitions(id, pairs) {
    const list = document.getElementById(id);
    list.replaceChildren();
    for (const [term, value] of pairs) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = String(value);
      list.append(dt, dd);
    }
  }

  function drawMembers(status) {
    const body = document.querySelector("#members tbody");
    body.replaceChildren();
    for (const member of status.members) {
      const row = document.createElement("tr");
      row.setAttribute("data-member", String(member.id));
      row.setAttribute("data-status", member.status);
      cell(row, member.id === status.node ? member.id + " (this node)" : member.id);
      cell(row, member.in_ring ? "member" : "outside");
      cell(row, member.status, member.status);
      cell(row, member.state, member.state);
      cell(row, member.datacenter);
      cell(row, member.rack);
      cell(row, member.weight, "number");
      cell(row, member.vnodes, "number");
      const owns = cell(row, (member.ownership * 100).toFixed(1) + "% ", "number");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.round(member.ownership * 100) + "px";
      owns.appendChild(bar);
      cell(row, member.addr);
      body.appendChild(row);
    }
  }

  function drawRequests(status, now) {
    const body = document.querySelector("#requests tbody");
    body.replaceChildren();
    const elapsed = previous ? (now - previous.at) / 1000 : 0;
    for (const request of status.requests) {
      const total = OUTCOMES.reduce((sum, outcome) => sum + request[outcome], 0);
      const before = previous && previous.requests.find((r) => r.operation === request.operation);
      let rate = "–";
      if (before && elapsed > 0) {
        const earlier = OUTCOMES.reduce((sum, outcome) => sum + before[outcome], 0);
        rate = (Math.max(0, total - earlier) / elapsed).toFixed(1);
      }
      const row = document.createElement("tr");
      row.setAttribute("data-operation", request.operation);
      cell(row, request.operation);
      cell(row, rate, "number");
      for (const outcome of OUTCOMES) {
        cell(row, request[outcome], "number");
      }
      cell(row, milliseconds(request.p50_ms), "number");
      cell(row, milliseconds(request.p99_ms), "number");
      body.appendChild(row);
    }
  }

  function draw(status) {
    const now = Date.now();
    text("node", status.node);
    text("ring-version", status.ring_changes + " changes (" + status.ring_fingerprint + ")");
    text("replicas", status.replicas);
    text("in-flight", status.requests_in_flight);
    drawMembers(status);
    drawRequests(status, now);
    const hints = status.hints;
    const queues = hints.queues.map((queue) => [
      "for node " + queue.target, queue.hints + " hints, " + queue.bytes + " bytes",
    ]);
    definitions("hints", [
      ["pending", hints.pending + " hints, " + hints.bytes_pending + " bytes"],
      ...(queues.length > 0 ? queues : [["queues", "none waiting"]]),
      ["delivered", hints.delivered],
      ["expired unsent", hints.expired],
      ["refused (queue full)", hints.overflowed],
    ]);
    const ae = status.anti_entropy;
    definitions("anti-entropy", [
      ["schedule", ae.interval_ms === 0 ? "off (POST /admin/repair sweeps once)"
        : "every " + ae.interval_ms + " ms, " + ae.ranges_per_round + " ranges a round"],
      ["ranges replicated here", ae.ranges_replicated],
      ["rounds", ae.rounds],
      ["ranges compared", ae.ranges_compared],
      ["ranges differing", ae.ranges_differing],
      ["records repaired", ae.records_repaired],
    ]);
    const storage = status.storage;
    definitions("storage", [
      ["level-0 tables", storage.level0_tables],
      ["write stalls", storage.write_stalls],
      ["fsync p99", milliseconds(storage.sync_p99_ms)],
    ]);
    text("updated", new Date(now).toLocaleTimeString());
    previous = { at: now, requests: status.requests };
  }

  async function poll() {
    let status;
    try {
      const response = await fetch("/status.json", { cache: "no-store" });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      status = await response.json();
    } catch (error) {
      fail("cannot read /status.json: " + error.message + " (retrying)");
      setTimeout(poll, POLL_MS);
      return;
    }
    try {
      draw(status);
    } catch (error) {
      broken = true;
      fail("script error while drawing: " + error.message);
    }
    if (!broken) {
      document.getElementById("error").hidden = true;
      document.body.removeAttribute("data-error");
      document.body.setAttribute("data-ok", "1");
    }
    setTimeout(poll, POLL_MS);
  }

  poll();
})();
