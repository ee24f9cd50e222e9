// Follows what another process does to the runs shown: every second the page is asked for
// again and its main part replaced when it changed, without a reload; and a timeline bar
// clicked opens the attempt it links to. Nothing else runs here.
(function () {
  "use strict";
  // A bar of the timeline links to its attempt: open it, so its request and answer show.
  function openTarget() {
    var target = window.location.hash && document.getElementById(window.location.hash.slice(1));
    if (target && target.tagName === "DETAILS") { target.open = true; }
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();
  var main = document.getElementById("live");
  if (!main || !main.dataset.live) {
    return;
  }
  function tick() {
    var active = document.activeElement;
    if (active && main.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) {
      window.setTimeout(tick, 1000); // someone is typing a filter: later
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text !== null) {
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
          if (fresh && fresh.innerHTML !== main.innerHTML) {
            var open = Array.prototype.map.call(
              main.querySelectorAll("details[open]"), function (d) { return d.id; });
            main.innerHTML = fresh.innerHTML;
            open.forEach(function (id) {
              var d = id && document.getElementById(id);
              if (d) { d.open = true; }
            });
            if (!fresh.dataset.live) {
              delete main.dataset.live;
              return; // the run ended: nothing more will change
            }
          }
        }
        window.setTimeout(tick, 1000);
      })
      .catch(function () { window.setTimeout(tick, 2000); });
  }
  window.setTimeout(tick, 1000);
})();
