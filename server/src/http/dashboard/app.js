// Rustploy dashboard: progressive enhancement only. Every page works without this script.
// It follows a running deployment's log over server-sent events, and refreshes status
// tables marked data-refresh.
"use strict";

function followLog(pre) {
  if (pre.dataset.active !== "true" || !window.EventSource) return;
  const status = document.getElementById("log-status");
  const url = pre.dataset.stream + "?after=" + encodeURIComponent(pre.dataset.after || "0");
  // EventSource reconnects by itself and resumes with Last-Event-ID.
  const source = new EventSource(url);
  source.addEventListener("log", (e) => {
    let entry;
    try { entry = JSON.parse(e.data); } catch (_) { return; }
    const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 40;
    const line = document.createElement("span");
    line.className = "line " + entry.stream;
    line.dataset.seq = entry.seq;
    line.textContent = entry.line + "\n";
    pre.appendChild(line);
    pre.dataset.after = entry.seq;
    if (follow) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", (e) => {
    source.close();
    let end = {};
    try { end = JSON.parse(e.data); } catch (_) { /* keep the default */ }
    if (status) status.textContent = "The deployment ended: " + (end.state || "gone") + ".";
    // Reload once so that the state, duration and buttons are current.
    setTimeout(() => window.location.reload(), 800);
  });
  source.onerror = () => {
    if (status) status.textContent = "Connection lost; reconnecting…";
  };
  source.onopen = () => {
    if (status) status.textContent = "Following the log as it is written.";
  };
  pre.scrollTop = pre.scrollHeight;
}

function refresh(box) {
  const seconds = Number(box.dataset.refresh) || 5;
  // A page answering a form refreshes from the page the box belongs to (data-refresh-from).
  const from = box.dataset.refreshFrom || window.location.href;
  const timer = setInterval(async () => {
    if (document.hidden) return;
    const active = document.activeElement;
    if (active && box.contains(active) && active.matches("input, select, textarea")) return;
    // A confirm the user opened stays open until they answer it.
    if (box.querySelector("details[open]")) return;
    try {
      const response = await fetch(from, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById(box.id);
      if (fresh) box.replaceChildren(...fresh.childNodes);
      // The page stops asking once there is nothing left to follow (a backup finished).
      if (!fresh || !fresh.hasAttribute("data-refresh")) clearInterval(timer);
    } catch (_) {
      // Offline for a moment: try again at the next tick.
    }
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("log");
  if (log) followLog(log);
  document.querySelectorAll("[data-refresh][id]").forEach(refresh);
});
