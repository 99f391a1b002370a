// loopguard dashboard: refreshes the parts of a page marked data-live when the ledger, the approval queue or
// the budgets change. Pages are complete without it; it only saves a reload. Server-sent events first (/events),
// polling /api/state when those are blocked (some proxies buffer them).
(function () {
  "use strict";
  var body = document.body;
  var version = body.getAttribute("data-version") || "";
  var pollMs = parseInt(body.getAttribute("data-poll-ms") || "1000", 10) || 1000;
  var badge = document.getElementById("live-status");
  var busy = false;
  var again = false;

  function show(state, text, title) {
    if (!badge) return;
    badge.textContent = text;
    badge.setAttribute("data-state", state);
    badge.title = title;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok && response.status !== 404) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (element) {
          var fresh = doc.getElementById(element.id);
          if (fresh && !element.contains(document.activeElement)) {
            element.replaceWith(document.importNode(fresh, true));
          }
        });
        version = (doc.body && doc.body.getAttribute("data-version")) || version;
        body.setAttribute("data-version", version);
        document.dispatchEvent(new CustomEvent("loopguard:refreshed", { detail: version }));
      })
      .catch(function () { /* the next change tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function changed(next) {
    if (next && next !== version) { version = next; refresh(); }
  }

  function poll() {
    show("polling", "polling", "live updates by polling every " + pollMs / 1000 + " s");
    window.setInterval(function () {
      fetch("/api/state", { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.json(); })
        .then(function (state) {
          show("polling", "polling", "live updates by polling every " + pollMs / 1000 + " s");
          changed(state.version);
        })
        .catch(function () { show("offline", "offline", "the dashboard cannot be reached"); });
    }, Math.max(pollMs, 1000));
  }

  if (!window.EventSource) { poll(); return; }
  var failures = 0;
  var source = new EventSource("/events");
  source.onopen = function () {
    failures = 0;
    show("live", "live", "live updates (server-sent events)");
  };
  source.addEventListener("change", function (event) {
    failures = 0;
    show("live", "live", "live updates (server-sent events)");
    changed(event.data);
  });
  source.onerror = function () {
    failures += 1;
    // CLOSED: the browser gave up (an HTTP error, a proxy that refuses event streams); else it reconnects.
    if (source.readyState === EventSource.CLOSED || failures >= 3) { source.close(); poll(); }
    else { show("offline", "reconnecting", "reconnecting to the dashboard"); }
  };
})();
