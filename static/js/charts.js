/*
 * plotly charts without inline script (the Content-Security-Policy allows none without a nonce):
 * <div data-plotly-source="ID" data-plotly-config='{...}'> is drawn from the figure in
 * <script type="application/json" id="ID"> (Django's json_script), when the page loads and again
 * whenever htmx swaps new content in (a polled fragment brings a new figure).
 */
(function () {
  "use strict";

  function draw(root) {
    if (!window.Plotly || !root || !root.querySelectorAll) return;
    root.querySelectorAll("[data-plotly-source]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-plotly-source"));
      if (!source) return;
      var figure = JSON.parse(source.textContent);
      var config = el.hasAttribute("data-plotly-config")
        ? JSON.parse(el.getAttribute("data-plotly-config"))
        : {};
      window.Plotly.react(el, figure.data, figure.layout, config);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { draw(document); });
  } else {
    draw(document);
  }
  // The swapped element may already be detached when this fires (outerHTML): redraw them all
  // (Plotly.react only changes what differs).
  document.addEventListener("htmx:afterSettle", function () { draw(document); });
})();
