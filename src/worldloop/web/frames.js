// worldloop binary frames (worldloop/frame_binary.py): keyframes and deltas read with DataView
// and typed arrays, no JSON but the small meta block. Plain script, no build step; viewer.js uses
// window.worldloopFrames.connect when GET /api/v1/live names a WebSocket.
(() => {
  "use strict";

  const Q = 65535;
  const TURN = 65536;
  const HEAD = 48; // struct "<BBHIId6fI"
  const COL_ID = 1, COL_HEADING = 2, COL_SHADE = 4;
  const FULL = 0, BY_INDEX = 1; // 2: by id
  const GRID_SAME = 1, GRID_FULL = 2, GRID_DIFF = 3;
  const utf8 = new TextDecoder();
  const pad4 = (n) => (n + 3) & ~3;

  class DeltaBaseError extends Error {}

  // The message's body as [ArrayBuffer, offset]: a Promise when it was deflated (encoding 1).
  function bodyOf(buf) {
    const dv = new DataView(buf);
    if (dv.getUint8(0) !== 0x57 || dv.getUint8(1) !== 0x4c || dv.getUint8(2) !== 1) {
      throw new Error("not a worldloop binary frame (version 1)");
    }
    if (dv.getUint8(3) === 0) return [buf, 4];
    const stream = new Blob([new Uint8Array(buf, 4)]).stream();
    return new Response(stream.pipeThrough(new DecompressionStream("deflate-raw")))
      .arrayBuffer()
      .then((b) => [b, 0]);
  }

  // A column: absolute (no base) or the wrapping difference from the base entity's value.
  function undiff(d, ref, at, Type, mask) {
    if (!ref) return d.slice();
    const out = new Type(d.length);
    if (!at) {
      for (let i = 0; i < d.length; i++) out[i] = (d[i] + ref[i]) & mask;
    } else {
      for (let i = 0; i < d.length; i++) out[i] = (d[i] + (at[i] >= 0 ? ref[at[i]] : 0)) & mask;
    }
    return out;
  }

  function scaled(q, k, Type) {
    const out = new Type(q.length);
    for (let i = 0; i < q.length; i++) out[i] = q[i] * k;
    return out;
  }

  // Decode the body at `off` of `buf`; a delta needs `base`, the decoded frame of its base tick.
  function decode(buf, off, base) {
    const dv = new DataView(buf, off);
    const kind = dv.getUint8(0), flags = dv.getUint8(1), n = dv.getUint16(2, true);
    const tick = dv.getUint32(4, true), baseTick = dv.getUint32(8, true);
    const w = dv.getFloat32(20, true), h = dv.getFloat32(24, true);
    const metaLen = dv.getUint32(44, true);
    const meta = JSON.parse(utf8.decode(new Uint8Array(buf, off + HEAD, metaLen)));
    const frame = Object.assign({ tick, sim_time: dv.getFloat64(12, true) }, meta);
    const prev = kind === 1 ? base && base.state : null;
    if (kind === 1 && (!prev || prev.tick !== baseTick)) {
      throw new DeltaBaseError("delta of tick " + tick + " needs tick " + baseTick);
    }
    const state = { tick, layers: [], grid: null, gridVersion: tick };
    if (!(flags & 1)) return { state, frame };
    frame.world = { width: w, height: h };
    frame.bbox = [28, 32, 36, 40].map((p) => dv.getFloat32(p, true));
    let at = pad4(HEAD + metaLen);
    for (let i = 0; i < n; i++) {
      const mode = dv.getUint8(at), cols = dv.getUint8(at + 1), count = dv.getUint32(at + 4, true);
      at += 8;
      const bl = prev && mode !== FULL ? prev.layers[i] : null;
      let ids = null, match = null;
      if (cols & COL_ID) {
        if (mode === BY_INDEX) {
          ids = bl.id;
        } else {
          const d = new Int32Array(buf, off + at, count);
          ids = new Int32Array(count);
          let sum = 0;
          for (let k = 0; k < count; k++) ids[k] = sum = (sum + d[k]) | 0;
          at += 4 * count;
          if (bl) {
            const where = new Map();
            for (let k = 0; k < bl.id.length; k++) where.set(bl.id[k], k);
            match = new Int32Array(count);
            for (let k = 0; k < count; k++) {
              const j = where.get(ids[k]);
              match[k] = j === undefined ? -1 : j;
            }
          }
        }
      }
      const col16 = (ref) => {
        const d = new Uint16Array(buf, off + at, count);
        at += pad4(2 * count);
        return undiff(d, ref, match, Uint16Array, 0xffff);
      };
      const lay = { cols, id: ids };
      lay.x = col16(bl && bl.x);
      lay.y = col16(bl && bl.y);
      if (cols & COL_HEADING) lay.heading = col16(bl && bl.heading);
      if (cols & COL_SHADE) {
        const d = new Uint8Array(buf, off + at, count);
        at += pad4(count);
        lay.shade = undiff(d, bl && bl.shade, match, Uint8Array, 0xff);
      }
      state.layers.push(lay);
      const out = frame.layers[i];
      out.x = scaled(lay.x, w / Q, Float32Array);
      out.y = scaled(lay.y, h / Q, Float32Array);
      if (ids) out.id = ids;
      if (lay.heading) out.heading = scaled(lay.heading, (2 * Math.PI) / TURN, Float32Array);
      if (lay.shade) out.shade = scaled(lay.shade, 1 / 255, Float32Array);
    }
    const gmode = dv.getUint8(at), rows = dv.getUint32(at + 4, true), gcols = dv.getUint32(at + 8, true);
    at += 12;
    if (gmode === GRID_SAME) {
      state.grid = prev.grid;
      state.gridVersion = prev.gridVersion;
    } else if (gmode === GRID_FULL) {
      state.grid = new Uint8Array(buf.slice(off + at, off + at + rows * gcols));
    } else if (gmode === GRID_DIFF) {
      state.grid = undiff(new Uint8Array(buf, off + at, rows * gcols), prev.grid, null, Uint8Array, 0xff);
    }
    if (state.grid && frame.grid) {
      Object.assign(frame.grid, { rows, cols: gcols, levels: state.grid, version: state.gridVersion });
    }
    return { state, frame };
  }

  // Follow a WebSocket of binary frames: decode in order, hand each frame to `on.frame`.
  function connect(url, on) {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    let held = null, asked = false, chain = Promise.resolve();
    const stats = { frames: 0, keyframes: 0, bytes: 0, decodeMs: 0, lastDecodeMs: 0 };
    ws.onopen = () => on.open && on.open();
    ws.onerror = () => on.error && on.error();
    ws.onclose = () => on.close && on.close();
    ws.onmessage = (e) => {
      if (typeof e.data === "string") {
        const m = JSON.parse(e.data);
        if (m.type === "stats" && on.stats) on.stats(m.stats);
        if (m.type === "end" && on.end) on.end();
        return;
      }
      const buf = e.data;
      stats.bytes += buf.byteLength;
      chain = chain
        .then(() => bodyOf(buf))
        .then(([body, off]) => {
          const t0 = performance.now();
          let got;
          try {
            got = decode(body, off, held);
          } catch (err) {
            if (!(err instanceof DeltaBaseError)) throw err;
            held = null;
            if (!asked && ws.readyState === WebSocket.OPEN) ws.send("keyframe");
            asked = true;
            return;
          }
          const ms = performance.now() - t0;
          held = got;
          asked = false;
          stats.frames += 1;
          if (new DataView(body, off).getUint8(0) === 0) stats.keyframes += 1;
          stats.lastDecodeMs = ms;
          stats.decodeMs += ms;
          on.frame(got.frame);
        })
        .catch((err) => console.error("worldloop: binary frame", err));
    };
    return { close: () => ws.close(), stats, socket: ws };
  }

  window.worldloopFrames = { decode, bodyOf, connect, DeltaBaseError };
})();
