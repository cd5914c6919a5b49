// The dashboard's own script: the live log pane (SSE) and the metric charts (uPlot).
// Served from the coordinator, as htmx and uPlot are: the pages' CSP allows no other.
"use strict";

function followLog(pre) {
  const source = new EventSource(pre.dataset.stream);
  let attempt = null;
  source.addEventListener("log", (ev) => {
    const msg = JSON.parse(ev.data);
    if (attempt !== null && msg.attempt !== attempt) {
      pre.append(document.createTextNode(`\n--- attempt ${msg.attempt} ---\n`));
    }
    attempt = msg.attempt;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(document.createTextNode(msg.data));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", () => source.close());
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) pre.dataset.closed = "1"; };
}

function drawCharts(box) {
  const charts = new Map();  // series name -> {plot, holder}
  async function refresh() {
    let doc;
    try {
      const r = await fetch(box.dataset.metrics, { credentials: "same-origin" });
      if (!r.ok) return;
      doc = await r.json();
    } catch (e) { return; }
    if (doc.series.length && !box.classList.contains("charts")) {
      box.textContent = "";
      box.classList.add("charts");
    }
    for (const s of doc.series) {
      const xs = s.steps.map((step, i) => (step === null ? i : step));
      const ys = s.values;
      let c = charts.get(s.name);
      if (!c) {
        const holder = document.createElement("div");
        holder.className = "chart";
        holder.dataset.series = s.name;
        box.append(holder);
        const plot = new uPlot({
          title: s.name, width: 420, height: 220,
          scales: { x: { time: false } },
          series: [{ label: "step" }, { label: s.name, stroke: "#2f6fdb", width: 2, spanGaps: true }],
        }, [xs, ys], holder);
        c = { plot, holder };
        charts.set(s.name, c);
      } else {
        c.plot.setData([xs, ys]);
      }
      c.holder.dataset.points = String(ys.length);
    }
    if (doc.live) setTimeout(refresh, 2000);
  }
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const pre = document.getElementById("log");
  if (pre && pre.dataset.stream) followLog(pre);
  const box = document.getElementById("charts");
  if (box && box.dataset.metrics && window.uPlot) drawCharts(box);
});
