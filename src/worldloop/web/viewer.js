// worldloop live viewer: draws frames from GET /api/v1/stream (server-sent events) on a canvas.
// Plain script, no build step. Frame format: see World.view_region in worldloop/world.py.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const map = $("map");
  const ctx = map.getContext("2d");
  const plot = $("plot");
  const pctx = plot.getContext("2d");
  const TOKEN_KEY = "worldloop-admin-token";
  const HISTORY = 300; // plot points
  const SAMPLE_MS = 500; // one plot point per half second: 2.5 minutes on the plot
  const COLORS = {
    background: "#0f1510",
    soil: [58, 46, 30],
    grass: [86, 170, 72],
    border: "#3c4c3d",
    player: "#ff5a7a",
  };

  const state = {
    frame: null,
    stats: null,
    framesDrawn: 0,
    statsSeen: 0,
    world: { width: 1000, height: 1000 },
    view: null, // [x0, y0, x1, y1] in world units, null = whole world
    history: [],
    lastSample: 0,
    source: null,
    grassCanvas: document.createElement("canvas"),
    grassKey: null,
  };

  // ---- geometry ---------------------------------------------------------------------------
  function viewBox() {
    return state.view || [0, 0, state.world.width, state.world.height];
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
  function grassImage(g) {
    const key = state.frame.tick + ":" + g.cols + "x" + g.rows;
    if (state.grassKey === key) return state.grassCanvas;
    const c = state.grassCanvas;
    c.width = g.cols;
    c.height = g.rows;
    const gctx = c.getContext("2d");
    const img = gctx.createImageData(g.cols, g.rows);
    const d = img.data, lv = g.levels, a = COLORS.soil, b = COLORS.grass;
    for (let i = 0; i < lv.length; i++) {
      const t = lv[i] / 255;
      d[4 * i] = a[0] + (b[0] - a[0]) * t;
      d[4 * i + 1] = a[1] + (b[1] - a[1]) * t;
      d[4 * i + 2] = a[2] + (b[2] - a[2]) * t;
      d[4 * i + 3] = 255;
    }
    gctx.putImageData(img, 0, 0);
    state.grassKey = key;
    return c;
  }

  function draw() {
    const w = map.width, h = map.height;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = COLORS.background;
    ctx.fillRect(0, 0, w, h);
    const f = state.frame;
    const t = transform();
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(t.s, 0, 0, t.s, t.ox, t.oy);
    // the world's ground
    ctx.fillStyle = "rgb(" + COLORS.soil.join(",") + ")";
    ctx.fillRect(0, 0, state.world.width, state.world.height);
    if (f && f.grass && f.grass.levels && f.grass.levels.length) {
      const g = f.grass;
      ctx.imageSmoothingEnabled = true;
      ctx.drawImage(grassImage(g), g.x0, g.y0, g.cols * g.cell, g.rows * g.cell);
    }
    ctx.lineWidth = 2 / t.s;
    ctx.strokeStyle = COLORS.border;
    ctx.strokeRect(0, 0, state.world.width, state.world.height);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    if (!f) return;
    drawCreatures(f, t, dpr);
    drawPlayers(f, t, dpr);
    state.framesDrawn += 1;
  }

  function drawCreatures(f, t, dpr) {
    const c = f.creatures;
    if (!c || !c.x) return;
    let emax = 0;
    for (const e of c.energy || []) if (e > emax) emax = e;
    const r = Math.max(1.5 * dpr, Math.min(4 * dpr, 1.2 * t.s));
    for (let i = 0; i < c.x.length; i++) {
      const e = emax > 0 && c.energy ? c.energy[i] / emax : 0.7;
      // hungry creatures are pale, well-fed ones golden
      ctx.fillStyle = "hsl(" + (30 + 20 * e).toFixed(0) + ",85%," + (78 - 26 * e).toFixed(0) + "%)";
      ctx.beginPath();
      ctx.arc(c.x[i] * t.s + t.ox, c.y[i] * t.s + t.oy, r, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  function drawPlayers(f, t, dpr) {
    const players = f.players || [];
    ctx.font = (12 * dpr).toFixed(0) + "px system-ui, sans-serif";
    ctx.textAlign = "center";
    for (const p of players) {
      const x = p.x * t.s + t.ox, y = p.y * t.s + t.oy;
      const r = 7 * dpr;
      ctx.fillStyle = COLORS.player;
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2 * dpr;
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
      ctx.fillStyle = "#ffffff";
      ctx.textBaseline = "top";
      ctx.fillText(p.name || p.player_id, x, y + r + 3 * dpr);
      if (p.say) bubble(String(p.say), x, y - r - 6 * dpr, dpr);
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

  function drawPlot() {
    const w = plot.width, h = plot.height, hist = state.history;
    pctx.clearRect(0, 0, w, h);
    if (hist.length < 2) return;
    const span = Math.max(hist.length - 1, 40);
    // Each line on its own scale, so a population's ups and downs stay visible.
    const line = (key, color, lo, hi) => {
      pctx.strokeStyle = color;
      pctx.lineWidth = 1.5;
      pctx.beginPath();
      hist.forEach((p, i) => {
        const x = w - ((hist.length - 1 - i) / span) * w;
        const y = h - 6 - ((p[key] - lo) / (hi - lo || 1)) * (h - 20);
        if (i === 0) pctx.moveTo(x, y);
        else pctx.lineTo(x, y);
      });
      pctx.stroke();
    };
    let cmin = Infinity, cmax = -Infinity, pmax = 1;
    for (const p of hist) {
      cmin = Math.min(cmin, p.creatures);
      cmax = Math.max(cmax, p.creatures);
      pmax = Math.max(pmax, p.players);
    }
    const pad = Math.max(1, (cmax - cmin) * 0.1);
    line("players", "#ff5a7a", 0, pmax);
    line("creatures", "#f2c14e", Math.max(0, cmin - pad), cmax + pad);
    pctx.fillStyle = "#93a38e";
    pctx.font = "10px system-ui, sans-serif";
    pctx.fillText("creatures " + cmin + "–" + cmax + " · players ≤ " + pmax, 4, 10);
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

  function onFrame(f) {
    state.frame = f;
    if (f.world && f.world.width > 0 && f.world.height > 0) state.world = f.world;
    const sum = f.summary || {};
    $("tick").textContent = f.tick;
    $("sim-time").textContent = fmt(f.sim_time, 2) + " s";
    const creatures = sum.creature_count ?? sum.entity_count;
    $("creatures").textContent = creatures ?? "–";
    $("in-view").textContent = f.creatures ? f.creatures.total_in_view : "–";
    $("players").textContent = sum.player_count ?? (f.players ? f.players.length : "–");
    $("grass").textContent = sum.grass_total !== undefined ? fmt(sum.grass_total, 0) : "–";
    showStats(f.stats);
    const now = performance.now();
    if (now - state.lastSample >= SAMPLE_MS) {
      state.lastSample = now;
      state.history.push({ creatures: creatures || 0, players: sum.player_count || 0 });
      if (state.history.length > HISTORY) state.history.shift();
    }
    draw();
    drawPlot();
  }

  // ---- stream -----------------------------------------------------------------------------
  function streamUrl() {
    const q = new URLSearchParams();
    const hz = $("hz").value;
    if (hz) q.set("hz", hz);
    q.set("limit", $("limit").value);
    if (state.view) q.set("bbox", state.view.map((v) => v.toFixed(2)).join(","));
    return "/api/v1/stream?" + q.toString();
  }

  function setConn(on, text) {
    const el = $("conn");
    el.textContent = text;
    el.className = "conn " + (on ? "conn-on" : "conn-off");
  }

  function connect() {
    if (state.source) state.source.close();
    const es = new EventSource(streamUrl());
    state.source = es;
    es.onopen = () => setConn(true, "live");
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

  let reconnectTimer = null;
  function reconnectSoon() {
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, 250);
  }

  // ---- zoom and pan (viewport-limited stream) ---------------------------------------------
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
    const W = state.world.width, H = state.world.height;
    if (v) v = fitAspect(v);
    if (v && v[2] - v[0] >= W && v[3] - v[1] >= H) v = null;
    state.view = v;
    draw();
    reconnectSoon();
  }

  map.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [cx, cy] = toWorld(e.offsetX, e.offsetY);
    const [x0, y0, x1, y1] = viewBox();
    const k = Math.exp(Math.sign(e.deltaY) * 0.15);
    const minSpan = 10;
    const w = Math.max(minSpan, (x1 - x0) * k), h = Math.max(minSpan, (y1 - y0) * k);
    const fx = (cx - x0) / (x1 - x0), fy = (cy - y0) / (y1 - y0);
    setView([cx - fx * w, cy - fy * h, cx - fx * w + w, cy - fy * h + h]);
  }, { passive: false });

  let drag = null;
  map.addEventListener("mousedown", (e) => {
    drag = { x: e.offsetX, y: e.offsetY, view: viewBox().slice() };
    map.classList.add("dragging");
  });
  window.addEventListener("mousemove", (e) => {
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
  window.addEventListener("mouseup", () => {
    if (!drag) return;
    drag = null;
    map.classList.remove("dragging");
    if (state.view) reconnectSoon();
  });
  map.addEventListener("dblclick", () => setView(null));
  $("hz").addEventListener("change", connect);
  $("limit").addEventListener("change", connect);

  // ---- admin ------------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showAdmin() {
    const has = token() !== "";
    $("admin-controls").hidden = !has;
    $("token-form").hidden = has;
  }

  async function admin(path, body) {
    const msg = $("admin-msg");
    msg.textContent = "…";
    try {
      const resp = await fetch("/api/v1/admin/" + path, {
        method: "POST",
        headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
        body: JSON.stringify(body || {}),
      });
      let data = null;
      try { data = await resp.json(); } catch (_) { data = null; }
      if (resp.ok) {
        msg.textContent = path + ": ok";
      } else {
        const err = data && data.error ? data.error.message : resp.statusText;
        msg.textContent = path + " refused (" + resp.status + "): " + err;
      }
      return resp.ok;
    } catch (err) {
      msg.textContent = path + " failed: " + err;
      return false;
    }
  }

  // ---- jobs (the admin jobs API: list every 2 s while a token is set; run now, pause) ---------
  function slotText(slot) {
    if (!slot) return "–";
    if (slot.tick !== undefined) return "t" + slot.tick;
    return new Date(slot.ts * 1000).toLocaleTimeString();
  }

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function jobButton(td, label, name, action) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.dataset.job = name;
    b.dataset.action = action;
    b.addEventListener("click", async () => {
      if (await admin("jobs/" + encodeURIComponent(name) + "/" + action)) refreshJobs();
    });
    td.appendChild(b);
  }

  function renderJobs(jobs) {
    const body = $("jobs-table").tBodies[0];
    body.replaceChildren();
    for (const job of jobs) {
      const row = document.createElement("tr");
      row.dataset.job = job.name;
      cell(row, job.name).title = job.kind + ", " + job.schedule;
      cell(row, job.paused ? "paused" : slotText(job.next_run));
      const last = job.last_result;
      cell(row, last ? last.status : "–", last && last.status !== "ok" ? "bad" : "")
        .title = last && last.error ? last.error : "";
      cell(row, String(job.runs)).className = "runs";
      cell(row, String(job.errors), job.errors ? "bad" : "");
      const actions = cell(row, "");
      jobButton(actions, "run", job.name, "run");
      jobButton(actions, job.paused ? "resume" : "pause", job.name, job.paused ? "resume" : "pause");
      body.appendChild(row);
    }
  }

  async function refreshJobs() {
    if (!token()) { $("jobs").hidden = true; return; }
    try {
      const resp = await fetch("/api/v1/admin/jobs", {
        headers: { "Authorization": "Bearer " + token() },
      });
      if (!resp.ok) { $("jobs").hidden = true; return; }
      const data = await resp.json();
      renderJobs(data.jobs || []);
      $("jobs").hidden = !(data.jobs && data.jobs.length);
    } catch (_) {
      $("jobs").hidden = true;
    }
  }
  setInterval(refreshJobs, 2000);

  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    $("admin-msg").textContent = "";
    showAdmin();
    refreshJobs();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("admin-msg").textContent = "";
    showAdmin();
    refreshJobs();
  });
  $("btn-pause").addEventListener("click", () => admin("pause"));
  $("btn-resume").addEventListener("click", () => admin("resume"));
  $("btn-step").addEventListener("click", () => admin("step", { n: Number($("step-n").value) || 1 }));
  $("btn-rate").addEventListener("click", () => admin("rate", { hz: Number($("rate-hz").value) }));

  // ---- start ------------------------------------------------------------------------------
  fetch("/api/v1/world")
    .then((r) => (r.ok ? r.json() : null))
    .then((w) => { if (w && w.world) $("world-name").textContent = w.world; })
    .catch(() => {});
  window.addEventListener("resize", resize);
  showAdmin();
  refreshJobs();
  resize();
  draw();
  connect();

  // A small read-only handle for tests and for poking around in the console.
  window.worldloopViewer = {
    get frame() { return state.frame; },
    get stats() { return state.stats; },
    get framesDrawn() { return state.framesDrawn; },
    get statsSeen() { return state.statsSeen; },
    get view() { return state.view; },
    toScreen,
    setView,
  };
})();
