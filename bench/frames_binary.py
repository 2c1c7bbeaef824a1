"""Frames on the wire: JSON (today's stream) against binary keyframes, deltas and deflate.

For the demo meadow with 2,000 and 20,000 sheep in view (limit = all), over ``--ticks`` ticks of
the live world: bytes per frame of each encoding; bytes per viewer per second at 10 Hz on a
20 Hz world (every other tick: deltas against the frame two ticks back, a keyframe every
WORLDLOOP_FRAME_KEYFRAME_EVERY frames) against the JSON stream; encode time per frame (after
the scene, which both share); and decode time in headless Chromium (worldloop/web/frames.js on
the same messages: inflate, then the typed-array decode) against JSON.parse of the JSON frames.

Usage: python bench/frames_binary.py [--sizes 2000,20000] [--ticks 21] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from benchenv import header  # noqa: E402
from worldloop import WorldRuntime  # noqa: E402
from worldloop import frame_binary as fb  # noqa: E402
from worldloop.api.stream import loop_stats, with_stats  # noqa: E402
from worldloop.config import Settings  # noqa: E402
from worldloop.demo.meadow import Meadow  # noqa: E402
from worldloop.snapshot import dumps  # noqa: E402

FRAMES_JS = ROOT / "src" / "worldloop" / "web" / "frames.js"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWER_HZ = 10
WORLD_HZ = 20


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:.3f}"


def frames_of(n: int, ticks: int) -> dict[str, Any]:
    """Build ``ticks`` consecutive frames of a meadow of ``n`` sheep, in both encodings."""
    rt = WorldRuntime(Meadow(entities=n, seed=0), rate_hz=1000, start_paused=True)
    rt.start()
    out: dict[str, Any] = {"json": [], "states": [], "t_json": [], "t_state": [], "t_scene": []}
    try:
        for _ in range(ticks):
            rt.step(1)
            snap = rt.snapshot
            world = rt.world
            t0 = time.perf_counter()
            scene = world.scene(snap, None, n)
            t1 = time.perf_counter()
            frame = world.view_region(snap, None, n)  # builds the scene again, then JSON
            t2 = time.perf_counter()
            data = with_stats(dumps(frame), loop_stats(rt))
            t3 = time.perf_counter()
            state = fb.frame_state(snap.tick, snap.sim_time, snap.summary, scene, loop_stats(rt))
            t4 = time.perf_counter()
            out["json"].append(data)
            out["states"].append(state)
            out["t_scene"].append(t1 - t0)
            out["t_json"].append((t2 - t1) - (t1 - t0) + (t3 - t2))
            out["t_state"].append(t4 - t3)
    finally:
        rt.stop()
    return out


def encodings(built: dict[str, Any], every: int) -> dict[str, Any]:
    states: list[fb.FrameState] = built["states"]
    key_raw, key, d1_raw, d1, d2, t_key, t_delta = [], [], [], [], [], [], []
    for i, s in enumerate(states):
        key_raw.append(len(fb.encode(s, deflate=False)))
        t0 = time.perf_counter()
        key.append(len(fb.encode(s)))
        t_key.append(time.perf_counter() - t0)
        if i >= 1:
            d1_raw.append(len(fb.encode(s, states[i - 1], deflate=False)))
            t0 = time.perf_counter()
            d1.append(len(fb.encode(s, states[i - 1])))
            t_delta.append(time.perf_counter() - t0)
        if i >= 2:
            d2.append(len(fb.encode(s, states[i - 2])))
    stream = [fb.encode(states[0])]  # what a 10 Hz viewer gets: every other tick
    stream += [fb.encode(states[i], states[i - 2]) for i in range(2, len(states), 2)]
    json_sizes = [len(j) for j in built["json"]]
    per_s_json = VIEWER_HZ * statistics.mean(json_sizes)
    per_frame_bin = statistics.mean(d2) * (every - 1) / every + statistics.mean(key) / every
    return {
        "json": statistics.mean(json_sizes),
        "json_deflate": statistics.mean(
            len(zlib.compress(j, fb.DEFLATE_LEVEL)) for j in built["json"]
        ),
        "key_raw": statistics.mean(key_raw),
        "key": statistics.mean(key),
        "d1_raw": statistics.mean(d1_raw),
        "d1": statistics.mean(d1),
        "d2": statistics.mean(d2),
        "per_s_json": per_s_json,
        "per_s_bin": VIEWER_HZ * per_frame_bin,
        "t_key": t_key,
        "t_delta": t_delta,
        "stream": stream,
    }


DECODE_JS = """async ([msgs, jsons, rounds]) => {
  const F = window.worldloopFrames;
  const bufs = msgs.map((b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0)).buffer);
  const bodies = [];
  let t0 = performance.now();
  for (let r = 0; r < rounds; r++) {
    bodies.length = 0;
    for (const b of bufs) bodies.push(await F.bodyOf(b));
  }
  const inflate = (performance.now() - t0) / (rounds * bufs.length);
  let worst = 0;
  t0 = performance.now();
  for (let r = 0; r < rounds; r++) {
    let held = null;
    for (const [body, off] of bodies) {
      const t = performance.now();
      held = F.decode(body, off, held);
      if (r === rounds - 1) worst = Math.max(worst, performance.now() - t);  // warmed up
    }
  }
  const decode = (performance.now() - t0) / (rounds * bodies.length);
  t0 = performance.now();
  let n = 0;
  for (let r = 0; r < rounds; r++) for (const j of jsons) n += JSON.parse(j).tick;
  const parse = (performance.now() - t0) / (rounds * jsons.length);
  return {inflate, decode, worst, parse, n};
}"""


def chromium_decode(stream: list[bytes], jsons: list[bytes], rounds: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(content=FRAMES_JS.read_text())
        msgs = [base64.b64encode(m).decode() for m in stream]
        texts = [j.decode() for j in jsons]
        got: dict[str, float] = page.evaluate(DECODE_JS, [msgs, texts, rounds])
        version = browser.version
        browser.close()
    got["version"] = version  # type: ignore[assignment]
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--ticks", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=50, help="decode repetitions in Chromium")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    every = Settings().frame_keyframe_every
    sizes = [int(s) for s in args.sizes.split(",")]
    size_rows = [
        "| in view | JSON (today) | JSON+deflate | key raw | key | delta raw | delta | "
        "delta 2 ticks | ratio delta / JSON |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rate_rows = [
        "| in view | JSON B/s (baseline) | binary B/s | ratio (target ≤ 0.100) |",
        "|---:|---:|---:|---:|",
    ]
    time_rows = [
        "| in view | scene ms (both) | JSON encode ms (baseline) | quantize ms | key ms | "
        "delta ms | Chromium JSON.parse ms (baseline) | inflate ms | decode ms | worst decode "
        "ms | inflate+decode / JSON.parse |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    chrome = ""
    for n in sizes:
        built = frames_of(n, args.ticks)
        e = encodings(built, every)
        kb = lambda v: f"{v / 1024:,.1f} KiB"  # noqa: E731
        size_rows.append(
            f"| {n:,} | {kb(e['json'])} | {kb(e['json_deflate'])} | {kb(e['key_raw'])} | "
            f"{kb(e['key'])} | {kb(e['d1_raw'])} | {kb(e['d1'])} | {kb(e['d2'])} | "
            f"{e['d1'] / e['json']:.3f} |"
        )
        rate_rows.append(
            f"| {n:,} | {kb(e['per_s_json'])} | {kb(e['per_s_bin'])} | "
            f"{e['per_s_bin'] / e['per_s_json']:.3f} |"
        )
        dec = chromium_decode(e["stream"], built["json"][::2], args.rounds)
        chrome = str(dec.pop("version"))
        both = dec["inflate"] + dec["decode"]
        time_rows.append(
            f"| {n:,} | {ms(built['t_scene'])} | {ms(built['t_json'])} | {ms(built['t_state'])} | "
            f"{ms(e['t_key'])} | {ms(e['t_delta'])} | {dec['parse']:.3f} | {dec['inflate']:.3f} | "
            f"{dec['decode']:.3f} | {dec['worst']:.3f} | {both / dec['parse']:.3f} |"
        )
    lines = header("Binary frames: bytes, encode and decode (JSON vs binary vs delta vs deflate)")
    lines += [
        f"Chromium {chrome} (headless, {' '.join(ARGS[1:])}). Demo meadow, 1000 x 1000, "
        f"limit = everyone in view, {args.ticks} ticks stepped by hand; keyframe every {every} "
        "frames (WORLDLOOP_FRAME_KEYFRAME_EVERY). *key*: a whole binary frame; *delta*: "
        "against the previous tick; *delta 2 ticks*: what a 10 Hz viewer of a 20 Hz world "
        f"gets. Deflated (raw deflate, level {fb.DEFLATE_LEVEL}) unless *raw*. JSON is today's "
        "SSE frame data, its deflate at the same level for reference.",
        "",
        "## Bytes per frame",
        "",
        *size_rows,
        "",
        f"## Bytes per viewer per second at {VIEWER_HZ} Hz (world at {WORLD_HZ} Hz)",
        "",
        *rate_rows,
        "",
        "## Time per frame (medians; Chromium: mean over "
        f"{args.rounds} rounds of the 10 Hz stream, and the worst single decode)",
        "",
        *time_rows,
        "",
        "The binary frame's encode (quantize + key or delta) comes after the scene, which both",
        "encodings build; the gateway does it once per tick per viewport class, whatever the",
        "number of viewers. Decode is frames.js's decode() of an inflated body, inflate is",
        "DecompressionStream (async; the viewer inflates, then decodes and draws). The worst",
        "decode is over the last (warmed-up) round.",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
