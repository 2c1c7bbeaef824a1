// worldloop viewer: the world's own panel (worldloop.frame.Panel): its figures, and a plot of
// its series over time, sampled twice a second. viewer.js hands it each frame (show) and clears
// it when the viewer switches to another world (reset). Plain script, no build step.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const plot = $("plot");
  const pctx = plot.getContext("2d");
  const HISTORY = 300; // plot points
  const SAMPLE_MS = 500; // one plot point per half second: 2.5 minutes on the plot
  const PALETTE = ["#f2c14e", "#ff5a7a", "#6ec6ff", "#9be37b", "#c79bff", "#ffa35c"];
  const state = { frame: null, history: [], lastSample: 0 };

  const short = (v) => (Number.isInteger(v) ? String(v) : Number(v).toPrecision(3));
  const fmt = (v, digits) => (v === undefined || v === null ? "–" : Number(v).toFixed(digits));

  // ---- the panel's plot: each series on its own scale, sampled twice a second -------------
  function drawPlot() {
    const w = plot.width, h = plot.height, hist = state.history;
    const left = 4, bottom = h - 14, top = 14;
    pctx.clearRect(0, 0, w, h);
    const panel = state.frame && state.frame.panel;
    if (!panel || !panel.plots.length || hist.length < 2) return;
    const span = Math.max(hist.length - 1, 40);
    const ranges = [];
    panel.plots.forEach((series, j) => {
      let lo = Infinity, hi = -Infinity;
      for (const p of hist) if (p[j] !== undefined) { lo = Math.min(lo, p[j]); hi = Math.max(hi, p[j]); }
      const pad = Math.max(1, (hi - lo) * 0.1);
      const a = Math.max(0, lo - pad), b = hi + pad;
      ranges.push(series.label + " " + short(lo) + "–" + short(hi));
      pctx.strokeStyle = series.color || PALETTE[j % PALETTE.length];
      pctx.lineWidth = 1.5;
      pctx.beginPath();
      hist.forEach((p, i) => {
        const x = left + (w - left) - ((hist.length - 1 - i) / span) * (w - left);
        const y = bottom - ((p[j] - a) / (b - a || 1)) * (bottom - top);
        if (i === 0) pctx.moveTo(x, y);
        else pctx.lineTo(x, y);
      });
      pctx.stroke();
    });
    pctx.fillStyle = "#93a38e";
    pctx.font = "10px system-ui, sans-serif";
    pctx.textBaseline = "alphabetic";
    pctx.textAlign = "left";
    const unit = panel.plot_unit ? " (" + panel.plot_unit + ")" : "";
    const title = (panel.plot_title || "") + unit;
    pctx.fillText((title ? title + ": " : "") + ranges.join(" · "), left, 10);
    const secs = Math.round((span * SAMPLE_MS) / 1000);
    pctx.fillText("← " + secs + " s (wall time)", left, h - 3);
    pctx.textAlign = "right";
    pctx.fillText("now", w - 2, h - 3);
  }

  const slug = (name) => String(name).toLowerCase().replace(/[^a-z0-9]+/g, "-");

  // The world's own figures: its panel's stats, else the plain values of its summary.
  function showWorldStats(f) {
    let stats = f.panel ? f.panel.stats : null;
    if (!stats) {
      stats = {};
      for (const [k, v] of Object.entries(f.summary || {})) {
        if (k !== "tick" && (typeof v === "number" || typeof v === "string")) stats[k] = v;
      }
    }
    const dl = $("world-stats");
    const names = Object.keys(stats);
    if (dl.dataset.names !== names.join("\n")) {
      dl.replaceChildren();
      for (const name of names) {
        const dt = document.createElement("dt");
        dt.textContent = name;
        const dd = document.createElement("dd");
        dd.id = "stat-" + slug(name);
        dl.append(dt, dd);
      }
      dl.dataset.names = names.join("\n");
    }
    for (const name of names) {
      const v = stats[name];
      $("stat-" + slug(name)).textContent = typeof v === "number" && !Number.isInteger(v) ? fmt(v, 2) : v;
    }
    $("world-section").hidden = names.length === 0;
    const plots = f.panel ? f.panel.plots : [];
    $("plot-wrap").hidden = plots.length === 0;
    const legend = $("legend");
    const key = plots.map((p) => p.label).join("\n");
    if (legend.dataset.key !== key) {
      legend.replaceChildren();
      plots.forEach((p, j) => {
        const sw = document.createElement("span");
        sw.className = "sw";
        sw.style.background = p.color || PALETTE[j % PALETTE.length];
        legend.append(sw, document.createTextNode(p.label + " "));
      });
      legend.dataset.key = key;
      state.history = [];
    }
  }

  function show(f) {
    state.frame = f;
    showWorldStats(f);
    const now = performance.now();
    if (f.panel && now - state.lastSample >= SAMPLE_MS) {
      state.lastSample = now;
      state.history.push(f.panel.plots.map((p) => p.value));
      if (state.history.length > HISTORY) state.history.shift();
    }
    drawPlot();
  }

  // Another world: none of this one's figures, legend or plot stay.
  function reset() {
    state.frame = null;
    state.history = [];
    $("world-stats").replaceChildren();
    $("world-stats").dataset.names = "";
    $("legend").replaceChildren();
    $("legend").dataset.key = "";
    $("world-section").hidden = true;
    pctx.clearRect(0, 0, plot.width, plot.height);
  }

  window.worldloopPanel = { show, reset, PALETTE };
})();
