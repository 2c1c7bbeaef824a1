// worldloop viewer: which world this page shows. The URL carries it (?world=name; none: the
// server's default world), so a link opens it; every part of the viewer builds its API paths
// with api(path): /api/v1/... for the default world, /api/v1/worlds/<name>/... for another
// (docs/many-worlds.md). choose(name) switches the whole page (stream, play, admin) to a world
// and tells each part that asked (onChange). Plain script, no build step.
(() => {
  "use strict";

  const listeners = [];
  const fromUrl = () => new URLSearchParams(window.location.search).get("world") || null;
  let name = fromUrl();

  function api(path) {
    return (name === null ? "/api/v1" : "/api/v1/worlds/" + encodeURIComponent(name)) + path;
  }

  // Where this world's frames are (GET .../live): {stream, websocket}, or {missing: message}
  // for a world this server does not host, or {failed: message} when the server did not say.
  async function locate() {
    const asked = name;
    let resp;
    try {
      resp = await fetch(api("/live"), { cache: "no-store" });
    } catch (err) {
      return { failed: "the server did not answer: " + err, world: asked };
    }
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    if (resp.ok && data) return Object.assign({ world: asked }, data);
    const err = (data && data.error) || {};
    if (resp.status === 404 && err.code === "world_not_found") {
      return { missing: "no world named \u201c" + asked + "\u201d on this server", world: asked };
    }
    if (resp.status === 404 && asked === null) {
      // A server without the live route (an older one): the default world's SSE stream.
      return { stream: "/api/v1/stream", websocket: null, world: asked };
    }
    return { failed: "the server answered " + resp.status + ": " + (err.message || resp.statusText), world: asked };
  }

  // Show world `next` (null: the default world); the URL follows, so a reload or a link opens it.
  function choose(next, { push = true } = {}) {
    next = next || null;
    if (next === name) return;
    name = next;
    const url = new URL(window.location.href);
    if (name === null) url.searchParams.delete("world");
    else url.searchParams.set("world", name);
    if (push) window.history.pushState({ world: name }, "", url);
    else window.history.replaceState({ world: name }, "", url);
    for (const fn of listeners) fn(name);
  }

  // Back and forward walk through the worlds this page showed.
  window.addEventListener("popstate", () => choose(fromUrl(), { push: false }));

  window.worldloopWorld = {
    get name() { return name; },
    api,
    locate,
    choose,
    onChange(fn) { listeners.push(fn); },
  };
})();
