// depthstream upload page: send a file, poll its job, cancel it, show the result. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 300;
let info = { max_image_bytes: 20e6, max_video_bytes: 500e6 };
let current = null; // the job being shown; a newer upload replaces it

function mb(bytes) {
  return `${+(bytes / 1e6).toFixed(1)} MB`;
}

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : ({ 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
  return `${n}${suffix}`;
}

function setStatus(name, text, fraction, failed) {
  $("status").hidden = false;
  $("status").classList.toggle("failed", !!failed);
  $("status").classList.remove("complete");
  $("status-name").textContent = name;
  $("status-text").textContent = text;
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  $("bar-fill").style.width = `${pct}%`;
  document.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
}

function showError(message) {
  const text = String(message);
  $("error").textContent = text.charAt(0).toUpperCase() + text.slice(1);
  $("status").classList.add("complete");
  $("bar-fill").style.width = "100%";
  $("error").hidden = false;
  $("status").classList.add("failed");
  $("status-text").textContent = "failed";
  $("cancel").hidden = true;
}

function clearResult() {
  $("result").hidden = true;
  $("error").hidden = true;
  $("warnings").hidden = true;
  $("result-picture").hidden = true;
  $("result-video-box").hidden = true;
  $("downloads").replaceChildren();
  $("cancel").hidden = true;
  const video = $("result-video");
  video.pause();
  video.removeAttribute("src");
}

function refusal(status, body) {
  if (body && body.error) return body.error;
  if (status === 401) return "This server needs its token: open the address it printed once.";
  return `The server answered ${status}.`;
}

function upload(file) {
  clearResult();
  const token = { name: file.name || "upload", url: null };
  current = token;
  const name = token.name;
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
  if ($("model").value) form.append("model", $("model").value);

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
      let message = refusal(xhr.status, body);
      const retry = xhr.getResponseHeader("Retry-After");
      if (xhr.status === 503 && retry) message += ` (try again in ${retry} s)`;
      showError(message);
      return;
    }
    // Downloads are named after this upload, also when an earlier one is reused.
    token.url = `${body.status_url}?name=${encodeURIComponent(body.name)}`;
    follow(body, token, name);
  };
  xhr.onerror = () => {
    if (current === token) showError("The upload failed: is the server still running?");
  };
  setStatus(name, "uploading", 0);
  xhr.send(form);
}

function showWarnings(job) {
  const list = (job.info && job.info.warnings) || [];
  $("warnings").textContent = list.map((w) => `Warning: ${w}`).join("\n");
  $("warnings").hidden = !list.length;
}

function follow(job, token, name) {
  if (current !== token) return;
  showWarnings(job);
  const label = { queued: "queued", running: "working", done: "done", failed: "failed",
                  cancelled: "cancelled" };
  let text = label[job.status] || job.status;
  if (job.status === "queued" && job.position) {
    text = job.position === 1 ? "queued, next in line" : `queued, ${ordinal(job.position)} in line`;
  }
  if (job.status === "running") text += ` ${Math.round(job.progress * 100)}%`;
  if (job.cached) text += " (cached)";
  const done = job.status === "done";
  setStatus(name, text, job.status === "queued" ? 0 : done ? 1 : job.progress,
            job.status === "failed");
  const active = job.status === "queued" || job.status === "running";
  $("cancel").hidden = !active;
  $("cancel").onclick = active ? () => cancel(token, name) : null;
  if (done) {
    $("status").classList.add("complete"); // the bar is full now, not on its way there
    showResult(job);
  } else if (job.status === "failed") {
    showError(job.error || "The job failed.");
  } else if (job.status === "cancelled") {
    $("status").classList.add("complete");
  } else {
    setTimeout(() => poll(token, name, job.cached), POLL_MS);
  }
}

function cancel(token, name) {
  if (current !== token) return;
  $("cancel").disabled = true;
  $("status-text").textContent = "cancelling\u2026";
  fetch(token.url, { method: "DELETE" })
    .then((r) => r.json().then((body) => ({ ok: r.ok, status: r.status, body })))
    .then(({ ok, status, body }) => {
      $("cancel").disabled = false;
      if (!ok && status !== 409) throw new Error(refusal(status, body));
      if (ok) follow(body, token, name);
    })
    .catch((err) => {
      $("cancel").disabled = false;
      if (current === token) showError(`Could not cancel: ${err.message}`);
    });
}

function poll(token, name, cached) {
  if (current !== token) return;
  fetch(token.url, { cache: "no-store" })
    .then((r) => r.json().then((body) => ({ ok: r.ok, status: r.status, body })))
    .then(({ ok, status, body }) => {
      if (!ok) throw new Error(refusal(status, body));
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
  if (i.model_title) facts.push(i.model_title + (i.precision ? ` (${i.precision})` : ""));
  if (i.units === "m") facts.push("depth in metres");
  if (i.width && i.height) facts.push(`${i.width}\u00d7${i.height}`);
  if (i.frames) facts.push(`${i.frames} frames`);
  if (i.inference_ms !== undefined) {
    const side = i.input_size ? ` at input ${i.input_size}` : "";
    facts.push(`network ${Math.round(i.inference_ms)} ms${side}`);
  }
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
    a.href = item.download_url;
    a.download = item.download;
    a.textContent = item.label;
    links.append(a);
  }
  $("result").hidden = false;
  // The result is below the upload card: bring it into view (on a phone, below the fold).
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
}

function limitsText(i) {
  let text = `Pictures up to ${mb(i.max_image_bytes)}`;
  if (i.max_image_mp) text += ` and ${i.max_image_mp} megapixels`;
  if (!i.video) return `${text} (videos are not available here)`;
  text += `, videos up to ${mb(i.max_video_bytes)}`;
  if (i.max_video_s) text += `, ${+(i.max_video_s / 60).toFixed(1)} minutes`;
  if (i.max_video_wh) text += ` and ${i.max_video_wh[0]}\u00d7${i.max_video_wh[1]}`;
  return text;
}

function setupModels(body) {
  const select = $("model");
  select.replaceChildren();
  for (const m of body.models || []) {
    const label = m.available ? m.title : `${m.title} (not on this server)`;
    const option = new Option(label, m.name, m.name === body.model, m.name === body.model);
    option.disabled = !m.available;
    option.title = m.available ? m.summary : m.why;
    select.append(option);
  }
  select.closest("label").hidden = (body.models || []).length < 2;
  const current = (body.models || []).find((m) => m.name === body.model);
  if (current) $("model-tag").textContent = `monocular depth \u00b7 ${current.title}`;
}

function setup() {
  fetch("/api/info").then((r) => r.json().then((body) => ({ ok: r.ok, status: r.status, body })))
    .then(({ ok, status, body }) => {
      if (!ok) {
        setStatus("", "", 0, true);
        showError(refusal(status, body));
        return;
      }
      info = body;
      $("limits").textContent = limitsText(body);
      const cmap = $("cmap");
      cmap.replaceChildren();
      for (const name of body.cmaps) cmap.append(new Option(name, name, name === "inferno", name === "inferno"));
      $("layout").closest("label").hidden = !body.video;
      $("live-link").hidden = !body.live;
      setupModels(body);
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
