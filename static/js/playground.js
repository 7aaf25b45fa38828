/*
 * The A/B run page re-renders #run-sides every few hundred ms while answers stream in
 * (htmx polling). A swap would reset each answer box's scroll position; this keeps a box that
 * was scrolled to its end following the new text, and leaves one the reader scrolled up alone.
 */
(function () {
  "use strict";
  var positions = {};

  function boxes(root) {
    return root ? root.querySelectorAll(".ab-answer[data-side]") : [];
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (!event.detail.target || event.detail.target.id !== "run-sides") return;
    positions = {};
    boxes(event.detail.target).forEach(function (box) {
      var atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      positions[box.dataset.side] = atEnd ? -1 : box.scrollTop;
    });
  });

  document.addEventListener("htmx:afterSettle", function () {
    boxes(document.getElementById("run-sides")).forEach(function (box) {
      var saved = positions[box.dataset.side];
      if (saved === undefined) return;
      box.scrollTop = saved === -1 ? box.scrollHeight : saved;
    });
  });
})();
