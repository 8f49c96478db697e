// depthstream upload page: send a file, poll its job, show the result. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 300;
let info = { max_image_bytes: 20e6, max_video_bytes: 500e6 };
let current = null; // the job being shown; a newer upload replaces it

function mb(bytes) {
  return `${+(bytes / 1e6).toFixed(1)} MB`;
}

function setStatus(name, text, fraction, failed) {
  $("status").hidden = false;
  $("status").classList.toggle("failed", !!failed);
  $("status-name").textContent = name;
  $("status-text").textContent = text;
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  $("bar-fill").style.width = `${pct}%`;
  document.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
}

function showError(message) {
  const text = String(message);
  $("error").textContent = text.charAt(0).toUpperCase() + text.slice(1);
  $("bar-fill").style.width = "100%";
  $("error").hidden = false;
  $("status").classList.add("failed");
  $("status-text").textContent = "failed";
}

function clearResult() {
  $("result").hidden = true;
  $("error").hidden = true;
  $("result-picture").hidden = true;
  $("result-video-box").hidden = true;
  $("downloads").replaceChildren();
  const video = $("result-video");
  video.pause();
  video.removeAttribute("src");
}

function upload(file) {
  clearResult();
  const token = {};
  current = token;
  const name = file.name || "upload";
  const limit = Math.max(info.max_image_bytes, info.max_video_bytes);
  if (file.size > limit) {
    setStatus(name, "", 0, true);
    showError(`The file is too large (${mb(file.size)}): pictures may be up to ` +
              `${mb(info.max_image_bytes)}, videos up to ${mb(info.max_video_bytes)}.`);
    return;
  }
  const form = new FormData();
  form.append("file", file, name);
  form.append("cmap", $("cmap").value);
  form.append("invert", $("invert").checked ? "true" : "false");
  form.append("layout", $("layout").value);

  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => {
    if (current === token && e.lengthComputable) {
      setStatus(name, `uploading ${Math.round(100 * e.loaded / e.total)}%`, e.loaded / e.total);
    }
  };
  xhr.onload = () => {
    if (current !== token) return;
    const body = xhr.response || {};
    if (xhr.status >= 400) {
      showError(body.error || `The server answered ${xhr.status}.`);
      return;
    }
    follow(body, token, name);
  };
  xhr.onerror = () => {
    if (current === token) showError("The upload failed: is the server still running?");
  };
  setStatus(name, "uploading", 0);
  xhr.send(form);
}

function follow(job, token, name) {
  if (current !== token) return;
  const label = { queued: "queued", running: "working", done: "done", failed: "failed" };
  let text = label[job.status] || job.status;
  if (job.status === "running") text += ` ${Math.round(job.progress * 100)}%`;
  if (job.cached) text += " (cached)";
  setStatus(name, text, job.status === "queued" ? 0 : job.progress, job.status === "failed");
  if (job.status === "done") {
    showResult(job);
  } else if (job.status === "failed") {
    showError(job.error || "The job failed.");
  } else {
    setTimeout(() => poll(job.status_url, token, name, job.cached), POLL_MS);
  }
}

function poll(url, token, name, cached) {
  if (current !== token) return;
  fetch(url, { cache: "no-store" })
    .then((r) => r.json().then((body) => ({ ok: r.ok, body })))
    .then(({ ok, body }) => {
      if (!ok) throw new Error(body.error || "the job is gone");
      body.cached = body.cached || cached;
      follow(body, token, name);
    })
    .catch((err) => {
      if (current === token) showError(`Lost track of the job: ${err.message}`);
    });
}

function showResult(job) {
  const r = job.results;
  if (job.kind === "picture") {
    $("result-depth").src = r.result_png.url;
    $("result-side").src = r.side_png.url;
    $("result-picture").hidden = false;
  } else {
    $("result-video").src = r.result_mp4.url;
    $("result-video-box").hidden = false;
    $("result-video").play().catch(() => {});
  }
  const facts = [];
  const i = job.info || {};
  if (i.width && i.height) facts.push(`${i.width}\u00d7${i.height}`);
  if (i.frames) facts.push(`${i.frames} frames`);
  if (i.inference_ms !== undefined) facts.push(`network ${Math.round(i.inference_ms)} ms`);
  if (i.fps_processed) facts.push(`${i.fps_processed.toFixed(1)} fps`);
  if (i.elapsed_ms !== undefined) facts.push(`total ${(i.elapsed_ms / 1000).toFixed(2)} s`);
  const p = $("result-info");
  p.textContent = facts.join(" \u00b7 ");
  if (job.cached) {
    const c = document.createElement("span");
    c.className = "cached";
    c.textContent = " \u00b7 from cache";
    p.append(c);
  }
  const links = $("downloads");
  links.replaceChildren();
  for (const item of Object.values(r)) {
    const a = document.createElement("a");
    a.href = `${item.url}?download`;
    a.download = item.download;
    a.textContent = item.label;
    links.append(a);
  }
  $("result").hidden = false;
}

function setup() {
  fetch("/api/info").then((r) => r.json()).then((i) => {
    info = i;
    $("limits").textContent =
      `Pictures up to ${mb(i.max_image_bytes)}` +
      (i.video ? `, videos up to ${mb(i.max_video_bytes)}` : " (videos are not available here)");
    const cmap = $("cmap");
    cmap.replaceChildren();
    for (const name of i.cmaps) cmap.append(new Option(name, name, name === "inferno", name === "inferno"));
    $("layout").closest("label").hidden = !i.video;
    $("live-link").hidden = !i.live;
  }).catch(() => {});

  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
    input.value = "";
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  $("options").addEventListener("submit", (e) => e.preventDefault());
  // The whole page takes drops, so a near miss does not open the file in the tab.
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; drop.classList.add("over"); });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; drop.classList.remove("over"); } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
}

setup();
