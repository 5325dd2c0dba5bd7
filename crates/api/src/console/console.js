// Tally console and billing portal: instants in the reader's own time zone. The server writes
// every instant as UTC inside <time datetime="…">; this rewrites the text in the browser's zone
// and keeps the exact UTC instant on hover. Without scripts the UTC text stays.
(function () {
  "use strict";
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var iso = t.getAttribute("datetime");
    var at = new Date(iso);
    if (isNaN(at.getTime())) { return; }
    t.textContent = format.format(at);
    t.title = iso + " (UTC)";
    t.setAttribute("data-zone", zone);
  });
})();
