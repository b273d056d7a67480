// pandawms monitor: optional auto-refresh of the current page (remembered in this browser).
(function () {
  "use strict";
  var box = document.getElementById("autorefresh");
  if (!box) { return; }
  var key = "pandawms.autorefresh";
  var timer = null;
  function arm() {
    if (timer) { clearTimeout(timer); timer = null; }
    if (box.checked) { timer = setTimeout(function () { window.location.reload(); }, 30000); }
  }
  try { box.checked = window.localStorage.getItem(key) === "1"; } catch (e) { box.checked = false; }
  box.addEventListener("change", function () {
    try { window.localStorage.setItem(key, box.checked ? "1" : "0"); } catch (e) { /* private mode */ }
    arm();
  });
  arm();
}());
