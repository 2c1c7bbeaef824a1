// worldloop live viewer: draws frames from the gateway's WebSocket of binary frames (frames.js)
// when GET /api/v1/live names one, else from GET /api/v1/stream (server-sent events), on a canvas.
// Plain script, no build step. It draws any world that speaks the frame protocol
// (worldloop/frame.py, docs/your-world.md): bounds, a grid, layers of entities, a panel
// (panel.js). The world shown is world.js's: another world chosen, the stream follows.
// admin.js, play.js and worlds.js add the admin controls, playing and the world picker; they
// use window.worldloopViewer and window.worldloopWorld.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const map = $("map");
  const ctx = map.getContext("2d");
  const panel = window.worldloopPanel;
  const current = window.worldloopWorld;
  const PALETTE = panel.PALETTE;
  const BORDER = "#3c4c3d";
  const SELF = "#7cf3ff";

  const state = {
    frame: null,
    stats: null,
    framesDrawn: 0,
    statsSeen: 0,
    world: null, // {width, height} once a frame has bounds
    view: null, // [x0, y0, x1, y1] in world units, null = whole world
    source: null,
    transport: null, // "websocket" or "sse" once connected
    streamUrl: null, // this world's SSE stream, from GET .../live
    wsUrl: null, // from GET .../live; null: no gateway, the SSE stream
    missing: null, // why this page's world cannot be shown (no such world here)
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
      const msg = state.missing || (f ? "this world draws no map (see docs/your-world.md)" : "waiting for a frame…");
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

  // ---- the loop's figures ----------------------------------------------------------------
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


  function onFrame(f) {
    state.frame = f;
    state.world = f.world && f.world.width > 0 && f.world.height > 0 ? f.world : null;
    $("tick").textContent = f.tick;
    $("sim-time").textContent = fmt(f.sim_time, 2) + " s";
    showStats(f.stats);
    panel.show(f);
    draw();
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
        reconnectTimer = opened ? setTimeout(locate, 1000) : setTimeout(connect, 0);
      },
    });
    state.source = conn;
  }

  function connect() {
    if (state.source) state.source.close();
    state.source = null;
    if (state.missing || !state.streamUrl) return;
    if (state.wsUrl && window.worldloopFrames) return connectWs();
    const es = new EventSource(state.streamUrl + "?" + viewQuery());
    state.source = es;
    es.onopen = () => { state.transport = "sse"; setConn(true, "live"); };
    es.onerror = () => {
      setConn(false, "reconnecting…");
      // The browser retries a dropped stream by itself, but not one refused with an HTTP error.
      if (es.readyState === EventSource.CLOSED && state.source === es) {
        clearTimeout(reconnectTimer);
        reconnectTimer = setTimeout(locate, 2000); // the world may be gone: ask again
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

  // ---- which world: find its stream, or say why there is none -----------------------------
  async function locate() {
    clearTimeout(reconnectTimer);
    const live = await current.locate();
    if (live.world !== current.name) return; // another world was chosen meanwhile
    const msg = $("world-msg");
    state.missing = live.missing || null;
    msg.textContent = live.missing ? live.missing + ": pick one from the list" : "";
    msg.hidden = !live.missing;
    if (live.missing) {
      if (state.source) state.source.close();
      state.source = null;
      setConn(false, "unknown world");
      draw();
      return;
    }
    if (live.failed) {
      setConn(false, "reconnecting…");
      reconnectTimer = setTimeout(locate, 2000);
      return;
    }
    state.streamUrl = live.stream;
    state.wsUrl = live.websocket || null;
    connect();
  }

  function showTitle() {
    const el = $("world-name");
    el.textContent = current.name || "";
    if (current.name !== null) return;
    fetch("/api/v1/world")
      .then((r) => (r.ok ? r.json() : null))
      .then((w) => { if (w && w.world && current.name === null) el.textContent = w.world; })
      .catch(() => {});
  }

  // Another world chosen: nothing of this one stays on the map, the panel or the stream.
  function switched() {
    clearTimeout(reconnectTimer);
    if (state.source) state.source.close();
    Object.assign(state, { source: null, transport: null, frame: null, stats: null, world: null });
    Object.assign(state, { view: null, gridKey: null, streamUrl: null, wsUrl: null });
    for (const id of ["tick", "sim-time", "rate", "tick-ms", "late-ms", "queue", "paused"]) $(id).textContent = "–";
    panel.reset();
    setConn(false, "connecting…");
    showTitle();
    draw();
    locate();
  }

  // ---- start ------------------------------------------------------------------------------
  current.onChange(switched);
  showTitle();
  window.addEventListener("resize", resize);
  resize();
  draw();
  locate();

  // A small handle for tests, the console, admin.js and play.js.
  window.worldloopViewer = {
    get frame() { return state.frame; },
    get stats() { return state.stats; },
    get framesDrawn() { return state.framesDrawn; },
    get transport() { return state.transport; },
    get binaryStats() { return state.source && state.source.stats; },
    get statsSeen() { return state.statsSeen; },
    get view() { return state.view; },
    get world() { return current.name; },
    get missing() { return state.missing; },
    get me() { return state.me; },
    set me(value) { state.me = value; draw(); },
    layer(kind) { return ((state.frame && state.frame.layers) || []).find((l) => l.kind === kind); },
    onMapClick(handler) { state.clickHandlers.push(handler); },
    toScreen,
    toWorld,
    setView,
  };
})();
