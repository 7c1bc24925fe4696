// Portcullis console: refreshes the overview's numbers from /console/overview.json every 2 s.
// No HTML is ever built from data: cells are filled with textContent, so nothing a request
// carried (a route or consumer name) can become markup. Loaded with `defer` from 'self' only (CSP).
"use strict";
(function () {
  var section = document.getElementById("traffic");
  if (!section) { return; }
  var url = section.getAttribute("data-refresh");

  function percent(x) { return (x * 100).toFixed(1) + "%"; }
  function ms(x) { return x === null ? "\u2014" : x.toFixed(1) + " ms"; }

  function fill(tbody, rows, empty, width) {
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    if (rows.length === 0) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = document.createElement("td");
      td.colSpan = width;
      td.textContent = empty;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    rows.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (cell, i) {
        var td = document.createElement("td");
        if (i > 0) { td.className = "num"; }
        td.textContent = cell;
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("status " + answer.status); }
        return answer.json();
      })
      .then(function (data) {
        fill(document.getElementById("traffic-rows"), data.routes.map(function (r) {
          return [r.route, String(r.requests), percent(r.refused_rate), percent(r.error_rate), ms(r.p95_ms)];
        }), "No requests yet.", 5);
        var consumers = document.getElementById("consumer-rows");
        if (consumers) {
          fill(consumers, data.consumers.map(function (c) {
            return [c.consumer, String(c.requests)];
          }), "None yet.", 2);
        }
        section.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function () { section.setAttribute("data-stale", "true"); });
  }

  window.setInterval(refresh, 2000);
})();
