// worldloop live viewer: draws frames from the gateway's WebSocket of binary frames (frames.js)
// when GET /api/v1/live names one, else from GET /api/v1/stream (server-sent events), on a canvas.
// Plain script, no build step. It draws any world that speaks the frame protocol
// (worldloop/frame.py, docs/your-world.md): bounds, a grid, layers of entities, a panel.
// admin.js and play.js add the admin controls and playing; they use window.worldloopViewer.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const map = $("map");
  const ctx = map.getContext("2d");
  const plot = $("plot");
  const pctx = plot.getContext("2d");
  const HISTORY = 300; // plot points
  const SAMPLE_MS = 500; // one plot point per half second: 2.5 minutes on the plot
  const PALETTE = ["#f2c14e", "#ff5a7a", "#6ec6ff", "#9be37b", "#c79bff", "#ffa35c"];
  const BORDER = "#3c4c3d";
  const SELF = "#7cf3ff";

  const state = {
    frame: null,
    stats: null,
    framesDrawn: 0,
    statsSeen: 0,
    world: null, // {width, height} once a frame has bounds
    view: null, // [x0, y0, x1, y1] in world units, null = whole world
    history: [],
    lastSample: 0,
    source: null,
    transport: null, // "websocket" or "sse" once connected
    wsUrl: null, // from GET /api/v1/live; null: no gateway, the SSE stream
    gridCanvas: document.createElement("canvas"),
    gridKey: null,
    me: null, // {entity_id, name} once this page has joined as a player
    clickHandlers: [],
  };

  // ---- geometry ---------------------------------------------------------------------------
  function viewBox() {
    const w = state.world || { width: 1, height: 1 };
    return state.view || [0, 0, w.width, w.height];
  }

  function transform() {
    const [x0, y0, x1, y1] = viewBox();
    const w = map.width, h = map.height;
    const s = Math.min(w / (x1 - x0), h / (y1 - y0));
    const ox = (w - (x1 - x0) * s) / 2 - x0 * s;
    const oy = (h - (y1 - y0) * s) / 2 - y0 * s;
    return { s, ox, oy };
  }

  // World -> CSS pixels relative to the canvas (what a test or a click would use).
  function toScreen(x, y) {
    const t = transform();
    const dpr = map.width / (map.clientWidth || map.width);
    return [(x * t.s + t.ox) / dpr, (y * t.s + t.oy) / dpr];
  }

  function toWorld(cssX, cssY) {
    const t = transform();
    const dpr = map.width / (map.clientWidth || map.width);
    return [(cssX * dpr - t.ox) / t.s, (cssY * dpr - t.oy) / t.s];
  }

  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(map.clientWidth * dpr));
    const h = Math.max(1, Math.round(map.clientHeight * dpr));
    if (map.width !== w || map.height !== h) {
      map.width = w;
      map.height = h;
      draw();
    }
  }

  // ---- drawing ----------------------------------------------------------------------------
  function rgb(hex) {
    const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
    return m ? [1, 2, 3].map((i) => parseInt(m[i], 16)) : [128, 128, 128];
  }

  function gridImage(g) {
    const key = (g.version !== undefined ? g.version : state.frame.tick) + ":" + g.cols + "x" + g.rows + ":" + g.x0 + "," + g.y0;
    if (state.gridKey === key) return state.gridCanvas;
    const c = state.gridCanvas;
    c.width = g.cols;
    c.height = g.rows;
    const gctx = c.getContext("2d");
    const img = gctx.createImageData(g.cols, g.rows);
    const d = img.data, lv = g.levels, a = rgb(g.low), b = rgb(g.high);
    for (let i = 0; i < lv.length; i++) {
      const t = lv[i] / 255;
      d[4 * i] = a[0] + (b[0] - a[0]) * t;
      d[4 * i + 1] = a[1] + (b[1] - a[1]) * t;
      d[4 * i + 2] = a[2] + (b[2] - a[2]) * t;
      d[4 * i + 3] = 255;
    }
    gctx.putImageData(img, 0, 0);
    state.gridKey = key;
    return c;
  }

  function draw() {
    const w = map.width, h = map.height;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#0f1510";
    ctx.fillRect(0, 0, w, h);
    const f = state.frame;
    const dpr = window.devicePixelRatio || 1;
    if (!state.world) {
      ctx.fillStyle = "#7d8b78";
      ctx.font = (14 * dpr).toFixed(0) + "px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      const msg = f ? "this world draws no map (see docs/your-world.md)" : "waiting for a frame…";
      ctx.fillText(msg, w / 2, h / 2);
      if (f) state.framesDrawn += 1;
      return;
    }
    const t = transform();
    ctx.setTransform(t.s, 0, 0, t.s, t.ox, t.oy);
    ctx.fillStyle = (f && f.background) || "#1d2a1f";
    ctx.fillRect(0, 0, state.world.width, state.world.height);
    if (f && f.grid && f.grid.levels && f.grid.levels.length) {
      const g = f.grid;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(gridImage(g), g.x0, g.y0, g.cols * g.cell, g.rows * g.cell);
    }
    ctx.lineWidth = 2 / t.s;
    ctx.strokeStyle = BORDER;
    ctx.strokeRect(0, 0, state.world.width, state.world.height);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    if (!f) return;
    (f.layers || []).forEach((layer, i) => drawLayer(layer, i, t, dpr));
    state.framesDrawn += 1;
  }

  function layerColor(layer, i, k) {
    const c = layer.color;
    if (Array.isArray(c)) return c[k] || PALETTE[i % PALETTE.length];
    return c || PALETTE[i % PALETTE.length];
  }

  function drawLayer(layer, i, t, dpr) {
    const n = (layer.x || []).length;
    const r = (layer.size || 3) * dpr;
    const labelled = layer.label || layer.say;
    ctx.font = (12 * dpr).toFixed(0) + "px system-ui, sans-serif";
    ctx.textAlign = "center";
    for (let k = 0; k < n; k++) {
      const x = layer.x[k] * t.s + t.ox, y = layer.y[k] * t.s + t.oy;
      ctx.globalAlpha = layer.shade ? 0.35 + 0.65 * layer.shade[k] : 1;
      ctx.fillStyle = layerColor(layer, i, k);
      ctx.beginPath();
      if (layer.heading) {
        const a = layer.heading[k], c = Math.cos(a), s = Math.sin(a);
        ctx.moveTo(x + 2 * r * c, y + 2 * r * s);
        ctx.lineTo(x - r * c - r * s, y - r * s + r * c);
        ctx.lineTo(x - r * c + r * s, y - r * s - r * c);
        ctx.closePath();
      } else {
        ctx.arc(x, y, r, 0, 2 * Math.PI);
      }
      ctx.fill();
      ctx.globalAlpha = 1;
      const mine = state.me && layer.id && layer.id[k] === state.me.entity_id;
      if (labelled || mine) {
        ctx.strokeStyle = mine ? SELF : "#ffffff";
        ctx.lineWidth = (mine ? 3 : 2) * dpr;
        ctx.beginPath();
        ctx.arc(x, y, r + (mine ? 4 * dpr : 0), 0, 2 * Math.PI);
        ctx.stroke();
      }
      const label = layer.label && layer.label[k];
      if (label || mine) {
        ctx.fillStyle = mine ? SELF : "#ffffff";
        ctx.textBaseline = "top";
        ctx.fillText((label || "") + (mine ? " (you)" : ""), x, y + r + 5 * dpr);
      }
      const say = layer.say && layer.say[k];
      if (say) bubble(String(say), x, y - r - 6 * dpr, dpr);
    }
  }

  function bubble(text, x, y, dpr) {
    const msg = text.length > 60 ? text.slice(0, 57) + "…" : text;
    const pad = 5 * dpr, h = 18 * dpr;
    const w = ctx.measureText(msg).width + 2 * pad;
    const bx = x - w / 2, by = y - h;
    ctx.fillStyle = "rgba(255,255,255,0.92)";
    ctx.beginPath();
    ctx.moveTo(bx, by);
    ctx.lineTo(bx + w, by);
    ctx.lineTo(bx + w, by + h);
    ctx.lineTo(x + 5 * dpr, by + h);
    ctx.lineTo(x, by + h + 5 * dpr);
    ctx.lineTo(x - 5 * dpr, by + h);
    ctx.lineTo(bx, by + h);
    ctx.closePath();
    ctx.fill();
    ctx.fillStyle = "#1b1f1a";
    ctx.textBaseline = "middle";
    ctx.fillText(msg, x, by + h / 2);
  }

  const short = (v) => (Number.isInteger(v) ? String(v) : Number(v).toPrecision(3));

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

  // ---- panel ------------------------------------------------------------------------------
  const fmt = (v, digits) => (v === undefined || v === null ? "–" : Number(v).toFixed(digits));

  function showStats(s) {
    if (!s) return;
    state.stats = s;
    state.statsSeen += 1;
    $("rate").textContent = fmt(s.rate_hz, 1) + " Hz";
    $("tick-ms").textContent = fmt(s.tick_duration_ms, 2) + " ms";
    $("late-ms").textContent = fmt(s.tick_lateness_ms, 2) + " ms";
    $("queue").textContent = s.queue_depth;
    $("paused").textContent = s.running === false ? "stopped" : s.paused ? "paused" : "running";
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

  function onFrame(f) {
    state.frame = f;
    state.world = f.world && f.world.width > 0 && f.world.height > 0 ? f.world : null;
    $("tick").textContent = f.tick;
    $("sim-time").textContent = fmt(f.sim_time, 2) + " s";
    showStats(f.stats);
    showWorldStats(f);
    const now = performance.now();
    if (f.panel && now - state.lastSample >= SAMPLE_MS) {
      state.lastSample = now;
      state.history.push(f.panel.plots.map((p) => p.value));
      if (state.history.length > HISTORY) state.history.shift();
    }
    draw();
    drawPlot();
  }

  // ---- stream -----------------------------------------------------------------------------
  function viewQuery() {
    const q = new URLSearchParams();
    const hz = $("hz").value;
    if (hz) q.set("hz", hz);
    q.set("limit", $("limit").value);
    if (state.view) q.set("bbox", state.view.map((v) => v.toFixed(2)).join(","));
    return q.toString();
  }

  function setConn(on, text) {
    const el = $("conn");
    el.textContent = text;
    el.className = "conn " + (on ? "conn-on" : "conn-off");
  }

  let reconnectTimer = null;
  // The gateway's WebSocket (binary frames); one that never opens falls back to the stream.
  function connectWs() {
    let opened = false;
    const conn = window.worldloopFrames.connect(state.wsUrl + "?" + viewQuery(), {
      open: () => { opened = true; state.transport = "websocket"; setConn(true, "live"); },
      frame: (f) => { setConn(true, "live"); onFrame(f); },
      stats: showStats,
      end: () => setConn(false, "stream ended"),
      close: () => {
        if (state.source !== conn) return;
        if (!opened) state.wsUrl = null;
        setConn(false, "reconnecting…");
        clearTimeout(reconnectTimer);
        reconnectTimer = setTimeout(connect, opened ? 1000 : 0);
      },
    });
    state.source = conn;
  }

  function connect() {
    if (state.source) state.source.close();
    state.source = null;
    if (state.wsUrl && window.worldloopFrames) return connectWs();
    const es = new EventSource("/api/v1/stream?" + viewQuery());
    state.source = es;
    es.onopen = () => { state.transport = "sse"; setConn(true, "live"); };
    es.onerror = () => {
      setConn(false, "reconnecting…");
      // The browser retries a dropped stream by itself, but not one refused with an HTTP error.
      if (es.readyState === EventSource.CLOSED && state.source === es) {
        clearTimeout(reconnectTimer);
        reconnectTimer = setTimeout(connect, 2000);
      }
    };
    es.addEventListener("frame", (e) => {
      setConn(true, "live");
      onFrame(JSON.parse(e.data));
    });
    es.addEventListener("stats", (e) => showStats(JSON.parse(e.data)));
    es.addEventListener("end", () => setConn(false, "stream ended"));
  }

  function reconnectSoon() {
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, 250);
  }

  // ---- zoom and pan (viewport-limited stream); a click goes to play.js --------------------
  // Widen a view to the canvas's shape, so the streamed region fills the whole map.
  function fitAspect(v) {
    let [x0, y0, x1, y1] = v;
    const aspect = map.width / map.height;
    const w = x1 - x0, h = y1 - y0;
    if (w / h < aspect) {
      const cx = (x0 + x1) / 2;
      x0 = cx - (h * aspect) / 2;
      x1 = cx + (h * aspect) / 2;
    } else {
      const cy = (y0 + y1) / 2;
      y0 = cy - w / aspect / 2;
      y1 = cy + w / aspect / 2;
    }
    return [x0, y0, x1, y1].map((n) => Math.round(n * 100) / 100);
  }

  function setView(v) {
    if (!state.world) return;
    const W = state.world.width, H = state.world.height;
    if (v) v = fitAspect(v);
    if (v && v[2] - v[0] >= W && v[3] - v[1] >= H) v = null;
    state.view = v;
    draw();
    reconnectSoon();
  }

  map.addEventListener("wheel", (e) => {
    e.preventDefault();
    if (!state.world) return;
    const [cx, cy] = toWorld(e.offsetX, e.offsetY);
    const [x0, y0, x1, y1] = viewBox();
    const k = Math.exp(Math.sign(e.deltaY) * 0.15);
    const minSpan = 10;
    const w = Math.max(minSpan, (x1 - x0) * k), h = Math.max(minSpan, (y1 - y0) * k);
    const fx = (cx - x0) / (x1 - x0), fy = (cy - y0) / (y1 - y0);
    setView([cx - fx * w, cy - fy * h, cx - fx * w + w, cy - fy * h + h]);
  }, { passive: false });

  let drag = null;
  map.addEventListener("pointerdown", (e) => {
    drag = { x: e.offsetX, y: e.offsetY, x0: e.offsetX, y0: e.offsetY, view: viewBox().slice() };
    map.classList.add("dragging");
  });
  window.addEventListener("pointermove", (e) => {
    if (!drag || !state.view) return;
    const rect = map.getBoundingClientRect();
    const [ax, ay] = toWorld(drag.x, drag.y);
    const [bx, by] = toWorld(e.clientX - rect.left, e.clientY - rect.top);
    const dx = ax - bx, dy = ay - by;
    const v = drag.view;
    state.view = [v[0] + dx, v[1] + dy, v[2] + dx, v[3] + dy];
    drag.view = state.view.slice();
    drag.x = e.clientX - rect.left;
    drag.y = e.clientY - rect.top;
    draw();
  });
  window.addEventListener("pointerup", (e) => {
    if (!drag) return;
    const rect = map.getBoundingClientRect();
    const cx = e.clientX - rect.left, cy = e.clientY - rect.top;
    const moved = Math.hypot(cx - drag.x0, cy - drag.y0);
    drag = null;
    map.classList.remove("dragging");
    if (moved < 5 && state.world && e.target === map) {
      const [wx, wy] = toWorld(cx, cy);
      for (const handler of state.clickHandlers) handler(wx, wy);
    } else if (state.view) {
      reconnectSoon();
    }
  });
  map.addEventListener("dblclick", () => setView(null));
  $("hz").addEventListener("change", connect);
  $("limit").addEventListener("change", connect);

  // ---- start ------------------------------------------------------------------------------
  fetch("/api/v1/world")
    .then((r) => (r.ok ? r.json() : null))
    .then((w) => { if (w && w.world) $("world-name").textContent = w.world; })
    .catch(() => {});
  window.addEventListener("resize", resize);
  resize();
  draw();
  fetch("/api/v1/live")
    .then((r) => (r.ok ? r.json() : null))
    .catch(() => null)
    .then((live) => { state.wsUrl = (live && live.websocket) || null; connect(); });

  // A small handle for tests, the console, admin.js and play.js.
  window.worldloopViewer = {
    get frame() { return state.frame; },
    get stats() { return state.stats; },
    get framesDrawn() { return state.framesDrawn; },
    get transport() { return state.transport; },
    get binaryStats() { return state.source && state.source.stats; },
    get statsSeen() { return state.statsSeen; },
    get view() { return state.view; },
    get me() { return state.me; },
    set me(value) { state.me = value; draw(); },
    layer(kind) { return ((state.frame && state.frame.layers) || []).find((l) => l.kind === kind); },
    onMapClick(handler) { state.clickHandlers.push(handler); },
    toScreen,
    toWorld,
    setView,
  };
})();
