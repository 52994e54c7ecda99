// southgate console: countdowns, and on an agent's page its charts (Plotly.js), range picker, auto-refresh.
// No inline script anywhere (the pages' Content-Security-Policy forbids it); page data come as JSON.
"use strict";

(function () {
  const REFRESH_MS = 5000;

  function duration(ms) {
    let s = Math.floor(Math.abs(ms) / 1000);
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (s >= size) {
        const rest = s % size;
        const sub = unit === "min" ? `${rest} s` : unit === "h" ? `${Math.floor(rest / 60)} min` : `${Math.floor(rest / 3600)} h`;
        return `${Math.floor(s / size)} ${unit} ${sub}`;
      }
    }
    return `${s} s`;
  }

  function relative(at, now) {
    if (at === null || at === undefined) return "never";
    return at >= now ? `in ${duration(at - now)}` : `${duration(now - at)} ago`;
  }

  function isoUtc(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace(".000Z", " UTC").replace(/\.(\d{3})Z$/, ".$1 UTC");
  }

  // Server time = browser time + skew (southgate's clock may be shifted for tests: time travel).
  let skew = 0;
  function serverNow() {
    return Date.now() + skew;
  }

  function tickCountdowns() {
    const now = serverNow();
    for (const el of document.querySelectorAll(".countdown")) {
      const at = Number(el.dataset.at);
      el.textContent = at > now ? `in ${duration(at - now)}` : `expired ${duration(now - at)} ago`;
      el.classList.toggle("bad", at <= now);
      el.classList.toggle("warn", at > now && at - now < 60000);
    }
  }

  function escapeName(text) {
    // Plotly renders a little HTML in trace names; names come from agents, so none of it.
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function initCountdowns() {
    const first = document.querySelector(".countdown[data-now]");
    if (first) skew = Number(first.dataset.now) - Date.now();
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
  }

  function initAgent(data) {
    const charts = Array.from(document.querySelectorAll(".chart"));
    const state = { span: data.span, from: null, to: null, loads: 0 };
    skew = data.now - Date.now();

    function query(div) {
      const width = Math.max(10, Math.min(5000, Math.round(div.clientWidth || 800)));
      const q = new URLSearchParams({ chart: div.dataset.key, width: String(width) });
      if (state.from !== null) {
        q.set("from", String(state.from));
        q.set("to", String(state.to));
      } else {
        q.set("span", state.span);
      }
      return `${data.series}?${q}`;
    }

    async function draw(div, index) {
      const note = document.getElementById(`chart-note-${index}`);
      div.dataset.state = "loading";
      let answer;
      try {
        const resp = await fetch(query(div), { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).slice(0, 200)}`);
        answer = await resp.json();
      } catch (err) {
        div.dataset.state = "error";
        if (note) note.textContent = `could not load the chart: ${err.message}`;
        return;
      }
      const n = answer.traces.length;
      const traces = answer.traces.map((t, i) => ({
        type: "scatter",
        mode: t.x.length > 200 ? "lines" : "lines+markers",
        name: escapeName(t.unit ? `${t.name} (${t.unit})` : t.name),
        x: t.x,
        y: t.y,
        xaxis: "x",
        yaxis: i === 0 ? "y" : `y${i + 1}`,
        hovertemplate: "%{y}<extra>%{fullData.name}</extra>",
      }));
      const layout = {
        height: 90 + 150 * n,
        margin: { l: 60, r: 20, t: 10, b: 40 },
        showlegend: true,
        legend: { orientation: "h", y: -0.12 / Math.max(1, n / 2) },
        grid: { rows: n, columns: 1, pattern: "coupled", roworder: "top to bottom" },
        // Fitted to the readings; an empty range still shows the window that was asked for.
        xaxis: answer.traces.some((t) => t.x.length) ? { type: "date" } : { type: "date", range: [answer.from, answer.to] },
        hovermode: "x unified",
      };
      answer.traces.forEach((t, i) => {
        layout[i === 0 ? "yaxis" : `yaxis${i + 1}`] = { title: { text: escapeName(t.unit || t.name), standoff: 4 }, automargin: true };
      });
      if (typeof Plotly === "undefined") {
        div.dataset.state = "error";
        if (note) note.textContent = "the chart library did not load";
        return;
      }
      await Plotly.react(div, traces, layout, { responsive: true, displaylogo: false });
      const total = answer.traces.reduce((a, t) => a + t.count, 0);
      const shown = answer.traces.reduce((a, t) => a + t.x.length, 0);
      const sampled = answer.traces.some((t) => t.downsampled);
      if (note) {
        note.textContent = total === 0
          ? "no readings in this range"
          : `${total.toLocaleString()} readings${sampled ? `, drawn as ${shown.toLocaleString()} points (min and max per pixel)` : ""}; times in UTC`;
      }
      div.dataset.state = "ok";
      div.dataset.count = String(total);
    }

    async function drawAll() {
      await Promise.all(charts.map((div, i) => draw(div, i)));
      state.loads += 1;
      document.body.dataset.chartLoads = String(state.loads);
    }

    async function refreshLatest() {
      try {
        const resp = await fetch(data.latest, { credentials: "same-origin" });
        if (!resp.ok) return;
        const info = await resp.json();
        skew = info.now - Date.now();
        const seen = document.getElementById("agent-last-seen");
        if (seen) seen.textContent = relative(info.lastSeen, info.now);
        const secret = document.getElementById("agent-secret");
        if (secret && info.secretExpires) secret.dataset.at = String(info.secretExpires);
        for (const r of info.latest) {
          const row = Array.from(document.querySelectorAll("#latest tr[data-dp]")).find((tr) => tr.dataset.dp === r.dataPointId);
          if (!row) continue;
          row.querySelector(".value").textContent = r.value;
          row.querySelector(".time").textContent = isoUtc(r.time);
        }
      } catch (err) {
        // the next tick tries again
      }
    }

    for (const button of document.querySelectorAll("button.span")) {
      button.addEventListener("click", () => {
        state.span = button.dataset.span;
        state.from = state.to = null;
        for (const b of document.querySelectorAll("button.span")) b.setAttribute("aria-pressed", String(b === button));
        drawAll();
      });
    }
    const apply = document.getElementById("range-apply");
    if (apply) {
      apply.addEventListener("click", () => {
        const from = Date.parse(`${document.getElementById("range-from").value}Z`);
        const to = Date.parse(`${document.getElementById("range-to").value}Z`);
        if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) {
          alert("Give a 'from' before a 'to' (UTC).");
          return;
        }
        state.from = from;
        state.to = to;
        for (const b of document.querySelectorAll("button.span")) b.setAttribute("aria-pressed", "false");
        drawAll();
      });
    }
    setInterval(() => {
      const auto = document.getElementById("auto-refresh");
      if (!auto || !auto.checked || document.hidden) return;
      refreshLatest();
      if (state.from === null) drawAll(); // a custom range does not move
    }, REFRESH_MS);
    drawAll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    initCountdowns();
    const dataEl = document.getElementById("console-data");
    if (dataEl) initAgent(JSON.parse(dataEl.textContent));
  });
})();
