"""The worker page's HTML, script and style: no build step, nothing from elsewhere."""

from __future__ import annotations

from string import Template

# $-placeholders are filled with html-escaped text (ui.render).
PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="$csrf">
<title>$name · Corral worker</title>
<link rel="stylesheet" href="/static/ui.css">
<script src="/static/ui.js" defer></script>
</head>
<body>
<header>
  <h1>Corral worker <span id="name">$name</span></h1>
  <span id="status" class="status status-$status" data-testid="status">$status</span>
</header>
<main>
<section>
  <dl>
    <dt>Worker id</dt><dd id="worker-id" data-testid="worker-id">$worker_id</dd>
    <dt>Coordinator</dt><dd><span id="coordinator-url">$coordinator_url</span>
      (<span id="connection">$connection</span>)</dd>
    <dt>Certificate expires</dt><dd id="cert-expiry">$cert_expiry</dd>
    <dt>Paused</dt><dd id="paused">$paused</dd>
    <dt>Not taking work because</dt><dd id="constrained">$constrained</dd>
  </dl>
  <div class="controls">
    <form method="post" action="/pause" data-action="pause">
      <input type="hidden" name="csrf_token" value="$csrf">
      <button type="submit" id="pause" data-testid="pause">Pause</button>
    </form>
    <form method="post" action="/resume" data-action="resume">
      <input type="hidden" name="csrf_token" value="$csrf">
      <button type="submit" id="resume" data-testid="resume">Resume</button>
    </form>
    <span id="said" role="status"></span>
  </div>
  <p class="hint">Pause: the coordinator sends this worker no new work; what runs goes on.</p>
</section>
<section>
  <h2>Running</h2>
  <table>
    <thead><tr><th>Job</th><th>Attempt</th><th>Name</th><th>Since</th></tr></thead>
    <tbody id="running" data-testid="running">$running</tbody>
  </table>
</section>
<section>
  <h2>Log</h2>
  <pre id="log" data-testid="log"></pre>
</section>
</main>
</body>
</html>
""")

SCRIPT = """\
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let after = 0;

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function show(s) {
    const status = $("status");
    status.textContent = s.status;
    status.className = "status status-" + s.status;
    $("worker-id").textContent = s.worker_id || "(not registered yet)";
    $("coordinator-url").textContent = s.coordinator_url;
    $("connection").textContent = s.connected ? "connected" : "not connected";
    $("cert-expiry").textContent = s.certificate_expires_at || "(a token, no certificate)";
    $("paused").textContent = s.paused ? "yes" : "no";
    $("constrained").textContent = s.constrained || "-";
    const rows = s.running.map((r) => {
      const tr = document.createElement("tr");
      tr.append(cell(r.job_id), cell(String(r.attempt)), cell(r.name || ""),
                cell(r.since || "starting"));
      return tr;
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell("nothing runs now");
      td.colSpan = 4;
      td.className = "none";
      tr.append(td);
      rows.push(tr);
    }
    $("running").replaceChildren(...rows);
  }

  async function poll() {
    try {
      const r = await fetch("/api/state", {cache: "no-store"});
      if (r.ok) show(await r.json());
    } catch (e) { /* the worker may be stopping: try again */ }
    try {
      const r = await fetch("/api/logs?after=" + after, {cache: "no-store"});
      if (r.ok) {
        const got = await r.json();
        const log = $("log");
        const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
        if (got.lines.length) log.append(got.lines.join("\\n") + "\\n");
        after = got.next;
        while (log.textContent.length > 200000) log.firstChild.remove();
        if (atEnd) log.scrollTop = log.scrollHeight;
      }
    } catch (e) { /* likewise */ }
  }

  for (const form of document.querySelectorAll("form[data-action]")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      $("said").textContent = "…";
      try {
        const r = await fetch(form.getAttribute("action"), {
          method: "POST", headers: {"X-CSRF-Token": csrf}, cache: "no-store",
        });
        const body = await r.json();
        $("said").textContent = r.ok ? (body.paused ? "paused" : "resumed")
                                     : (body.detail || body.error);
      } catch (e) {
        $("said").textContent = String(e);
      }
      poll();
    });
  }

  poll();
  setInterval(poll, 1000);
})();
"""

STYLE = """\
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1d2125; background: #f6f7f9; }
header { display: flex; align-items: center; gap: 1rem; padding: .8rem 1.2rem;
         background: #1f2d3d; color: #fff; }
h1 { font-size: 1.2rem; margin: 0; }
h2 { font-size: 1rem; margin: 0 0 .5rem; }
main { padding: 1rem 1.2rem; display: grid; gap: 1rem; }
section { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: .8rem 1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; margin: 0; }
dt { color: #5b6570; }
dd { margin: 0; font-family: ui-monospace, monospace; }
.controls { display: flex; gap: .5rem; align-items: center; margin-top: .8rem; }
button { padding: .35rem 1rem; border: 1px solid #8894a0; border-radius: 4px;
         background: #fff; cursor: pointer; }
.hint { color: #5b6570; font-size: .85rem; margin: .5rem 0 0; }
.status { padding: .15rem .6rem; border-radius: 1rem; background: #5b6570; font-weight: 600; }
.status-idle { background: #2f7d32; }
.status-busy { background: #1565c0; }
.status-paused, .status-constrained, .status-draining { background: #b26a00; }
.status-connecting, .status-stopping { background: #6d4c41; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #eceff1; }
td { font-family: ui-monospace, monospace; }
td.none { color: #5b6570; font-family: inherit; }
pre { max-height: 28rem; overflow: auto; background: #111; color: #ddd; padding: .6rem;
      margin: 0; font-size: 12.5px; white-space: pre-wrap; word-break: break-all; }
"""
