// Refreshes the page's main content every few seconds while it is open and visible, without a full reload.
// A served file, not inline script, so the Content-Security-Policy can forbid inline script altogether.
// The refresh waits while the operator is choosing (a checked box, a focused field), so a selection survives.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh-seconds")) || 0;
  if (!seconds) { return; }
  function busy() {
    var active = document.activeElement;
    if (active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA")) { return true; }
    return document.querySelector("main input[type=checkbox]:checked, details[open]") !== null;
  }
  function refresh() {
    if (document.visibilityState !== "visible" || busy()) { return schedule(); }
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) { window.location.reload(); return null; }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var main = fresh.getElementById("content");
        var footer = fresh.querySelector("footer");
        if (main) { document.getElementById("content").replaceWith(main); }
        if (footer) { document.querySelector("footer").replaceWith(footer); }
      })
      .catch(function () { /* the bridge restarting: try again next time */ })
      .then(schedule);
  }
  function schedule() { window.setTimeout(refresh, seconds * 1000); }
  schedule();
})();
