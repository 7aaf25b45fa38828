/*
 * kaitoweb UI glue (no dependencies; loaded synchronously at the end of <head>,
 * after {% block extra_head %}, so it only registers listeners on document).
 *
 *  - html.is-loading while any htmx request is in flight (drives .progress bar);
 *    the request's target gets aria-busy="true" (dimmed by app.css).
 *  - [data-dismiss] buttons remove their closest .alert (flash messages).
 *  - failed htmx requests (4xx/5xx/network) show an error banner in #messages,
 *    since htmx does not swap error responses. (With DEBUG, django-htmx's own
 *    script shows Django's error page for 400/403/404/500 instead.)
 *  - form[data-confirm] asks before submitting; select[data-autosubmit] submits its form
 *    (instead of inline onsubmit/onchange handlers, which the Content-Security-Policy blocks).
 *  - if plotly.js was loaded by components/plotly_script.html: global defaults
 *    that keep charts offline (no "share to cloud" button, no logo link).
 */
(function () {
  "use strict";

  var root = document.documentElement;
  var inflight = new Map(); // xhr -> target element

  document.addEventListener("htmx:beforeSend", function (event) {
    var detail = event.detail || {};
    if (!detail.xhr) return;
    inflight.set(detail.xhr, detail.target || null);
    if (detail.target && detail.target !== document.body) {
      detail.target.setAttribute("aria-busy", "true");
    }
    root.classList.add("is-loading");
  });

  // htmx:afterRequest can fire twice for one request (again on an ancestor when
  // the triggering element was swapped out), so track requests by their xhr.
  document.addEventListener("htmx:afterRequest", function (event) {
    var detail = event.detail || {};
    if (!detail.xhr || !inflight.has(detail.xhr)) return;
    var target = inflight.get(detail.xhr);
    inflight.delete(detail.xhr);
    if (target) target.removeAttribute("aria-busy");
    if (detail.target && detail.target !== target) detail.target.removeAttribute("aria-busy");
    if (inflight.size === 0) root.classList.remove("is-loading");
  });

  // htmx snapshots the page for back/forward just before swapping the response
  // in, while the target is still marked busy: clear the marks first.
  document.addEventListener("htmx:beforeHistorySave", function () {
    var busy = document.querySelectorAll('[aria-busy="true"]');
    for (var i = 0; i < busy.length; i++) busy[i].removeAttribute("aria-busy");
  });

  function showError(text) {
    var box = document.getElementById("messages");
    if (!box) return;
    var alert = document.createElement("div");
    alert.className = "alert alert-error";
    alert.setAttribute("role", "alert");
    var body = document.createElement("div");
    body.className = "alert-body";
    body.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "alert-close";
    close.setAttribute("data-dismiss", "");
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    alert.appendChild(body);
    alert.appendChild(close);
    box.appendChild(alert);
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail && event.detail.xhr;
    var status = xhr ? xhr.status : 0;
    var text;
    if (status === 403) {
      text = "You do not have permission to do that. Ask an admin for the operator or admin role.";
    } else if (status === 404) {
      text = "Not found (404). The item may have been deleted.";
    } else if (status >= 500) {
      text = "The server had an error (" + status + "). Try again; if it persists, check the logs.";
    } else {
      text = "The request failed (" + status + ").";
    }
    showError(text);
  });

  document.addEventListener("htmx:sendError", function () {
    showError("Could not reach the server. Check your connection and try again.");
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-dismiss]") : null;
    if (!button) return;
    var selector = button.getAttribute("data-dismiss") || ".alert";
    var box = button.closest(selector);
    if (box) box.remove();
  });

  // No inline event handlers (the Content-Security-Policy blocks them): forms ask before
  // submitting with data-confirm="question", selects submit their form with data-autosubmit.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute ? form.getAttribute("data-confirm") : null;
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);

  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field && field.hasAttribute && field.hasAttribute("data-autosubmit") && field.form) {
      if (typeof field.form.requestSubmit === "function") field.form.requestSubmit();
      else field.form.submit();
    }
  });

  if (window.Plotly && typeof window.Plotly.setPlotConfig === "function") {
    window.Plotly.setPlotConfig({
      displaylogo: false,
      showSendToCloud: false,
      plotlyServerURL: "",
      responsive: true
    });
  }
})();
