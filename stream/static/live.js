// depthstream live page: show the shared MJPEG stream and its numbers. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
let failures = 0;
let refused = false; // the stream did not start: the status says why

function connect() {
  const layout = $("live-layout").value;
  $("live-error").hidden = true;
  $("reconnect").hidden = true;
  refused = false;
  $("live-state").textContent = "connecting\u2026";
  // A new URL each time: the browser would otherwise keep showing the old stream.
  $("live").src = `/live/stream.mjpg?layout=${encodeURIComponent(layout)}&t=${Date.now()}`;
}

function show(text, value) {
  $(text).textContent = value === null || value === undefined ? "\u2013" : value;
}

function poll() {
  fetch("/api/live", { cache: "no-store" })
    .then((r) => r.json())
    .then((s) => {
      failures = 0;
      show("fps", s.running ? s.fps.toFixed(1) : null);
      show("net-ms", s.inference_ms === null ? null : Math.round(s.inference_ms));
      show("latency-ms", s.latency_ms === null ? null : Math.round(s.latency_ms));
      show("viewers", s.viewers);
      if (refused && s.running && s.viewers >= s.max_viewers) {
        $("live-state").textContent = "full";
        $("live-error").textContent = `${s.viewers} viewers watch already; try again later.`;
        $("live-error").hidden = false;
      } else if (s.running) {
        const size = s.size_wh ? `${s.size_wh[0]}\u00d7${s.size_wh[1]}` : "";
        $("live-state").textContent = `live ${size}` + (s.dropped ? ` \u00b7 ${s.dropped} frames skipped to stay current` : "");
      } else if (s.error) {
        $("live-state").textContent = "stopped";
        $("live-error").textContent = s.error.charAt(0).toUpperCase() + s.error.slice(1);
        $("live-error").hidden = false;
        $("reconnect").hidden = false;
      }
    })
    .catch(() => {
      if (++failures > 2) {
        $("live-state").textContent = "the server does not answer";
        $("reconnect").hidden = false;
      }
    });
}

$("live").addEventListener("error", () => {
  // The stream could not start (the camera does not open, too many viewers): the API
  // says why.
  refused = true;
  $("reconnect").hidden = false;
  poll();
});
$("live-layout").addEventListener("change", connect);
$("live-options").addEventListener("submit", (e) => e.preventDefault());
$("reconnect").addEventListener("click", connect);
connect();
poll();
setInterval(poll, 1000);
