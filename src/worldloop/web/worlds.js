// worldloop viewer: the world picker and the list of worlds (GET /api/v1/worlds, every 2 s):
// each world's status, tick and players; choosing one shows it (world.js switches the stream,
// the play panel and the admin panel). With the admin token, a world of a registered kind can
// be created (POST /api/v1/worlds) and one deleted (DELETE /api/v1/worlds/<name>, its journal
// kept: creating the name again resumes it). Plain script, no build step.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const current = window.worldloopWorld;
  const TOKEN_KEY = "worldloop-admin-token"; // admin.js keeps it
  const EVERY_MS = 2000;
  const ARMED_MS = 4000; // a delete asks "sure?" and waits this long for the second click

  const state = { worlds: [], kinds: [], loaded: false, down: false, armed: null, armedTimer: null };

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const say = (text) => { $("worlds-msg").textContent = text; };

  // The entry of the world shown: by name, or the default one when the URL names none.
  function isShown(w) {
    return current.name === null ? w.default : w.name === current.name;
  }

  async function errorText(resp) {
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    const why = data && data.error ? data.error.message : resp.statusText;
    const retry = resp.headers.get("Retry-After");
    return "(" + resp.status + ") " + why + (retry ? " — retry in " + retry + " s" : "");
  }

  // ---- the picker -------------------------------------------------------------------------
  function option(value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    return o;
  }

  function renderPicker() {
    const pick = $("world-pick");
    const options = state.worlds.map((w) => {
      const o = option(w.default ? "" : w.name, w.name + (w.default ? " (default)" : "") + " · " + w.status);
      o.selected = isShown(w);
      return o;
    });
    if (!state.worlds.some(isShown)) {
      const o = option("\u0000", (current.name || "?") + " (unknown)");
      o.disabled = o.selected = true;
      options.unshift(o);
    }
    // Rebuilt only when something in it changed: an open dropdown is left alone.
    const key = options.map((o) => o.value + "|" + o.textContent + "|" + o.selected).join("\n");
    if (pick.dataset.key === key) return;
    pick.dataset.key = key;
    pick.replaceChildren(...options);
  }

  $("world-pick").addEventListener("change", (e) => {
    if (e.target.value !== "\u0000") current.choose(e.target.value || null);
  });

  // ---- the list ---------------------------------------------------------------------------
  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function renderList() {
    const body = $("worlds-table").tBodies[0];
    const admin = token() !== "";
    const rows = state.worlds.map((w) => {
      const row = document.createElement("tr");
      row.dataset.world = w.name;
      row.dataset.status = w.status;
      if (isShown(w)) row.setAttribute("aria-current", "true");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "link world-open";
      open.textContent = w.name;
      open.title = w.default ? "the default world" : "kind " + w.kind;
      open.setAttribute("aria-label", "show world " + w.name);
      open.addEventListener("click", () => current.choose(w.default ? null : w.name));
      const first = cell(row, "");
      first.appendChild(open);
      const status = cell(row, w.status, "status " + (w.status === "failed" ? "bad" : ""));
      if (w.error) status.title = w.error;
      cell(row, String(w.tick), "num tick");
      cell(row, w.players === null || w.players === undefined ? "–" : String(w.players), "num players");
      const actions = cell(row, "");
      if (admin && !w.default) actions.appendChild(deleteButton(w.name));
      return row;
    });
    body.replaceChildren(...rows);
  }

  function deleteButton(name) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "world-delete";
    b.dataset.world = name;
    const armed = state.armed === name;
    b.textContent = armed ? "sure?" : "delete";
    b.setAttribute("aria-label", (armed ? "confirm: delete world " : "delete world ") + name);
    b.addEventListener("click", () => (state.armed === name ? remove(name) : arm(name)));
    return b;
  }

  function arm(name) {
    state.armed = name;
    clearTimeout(state.armedTimer);
    state.armedTimer = setTimeout(() => { state.armed = null; renderList(); }, ARMED_MS);
    renderList();
    say("click “sure?” to delete " + name + " (its journal is kept)");
  }

  function render() {
    renderPicker();
    renderList();
    const admin = token() !== "";
    $("world-create").hidden = !admin || state.kinds.length === 0;
    const kind = $("new-world-kind");
    if (kind.dataset.kinds !== state.kinds.join("\n")) {
      kind.replaceChildren(...state.kinds.map((k) => option(k, k)));
      kind.dataset.kinds = state.kinds.join("\n");
    }
  }

  function unavailable(why) {
    state.down = true; // cleared, with its message, by the next list that comes
    say("the list of worlds is unavailable" + why);
  }

  async function refresh() {
    try {
      const resp = await fetch("/api/v1/worlds", { cache: "no-store" });
      if (!resp.ok) { unavailable(" " + (await errorText(resp))); return; }
      const data = await resp.json();
      state.worlds = data.worlds || [];
      state.kinds = data.kinds || [];
      state.loaded = true;
      if (state.down) say("");
      state.down = false;
      render();
    } catch (err) {
      unavailable(": " + err);
    }
  }

  // ---- create and delete (admin) ----------------------------------------------------------
  $("world-create").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("new-world-name").value.trim();
    const text = $("new-world-config").value.trim();
    let config = {};
    if (text) {
      try { config = JSON.parse(text); } catch (err) { say("the config is not JSON: " + err.message); return; }
      if (config === null || typeof config !== "object" || Array.isArray(config)) {
        say("the config must be a JSON object, e.g. {\"entities\": 50}");
        return;
      }
    }
    say("creating " + name + "…");
    const resp = await fetch("/api/v1/worlds", {
      method: "POST",
      headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: JSON.stringify({ name, kind: $("new-world-kind").value, config }),
    }).catch((err) => err);
    if (!(resp instanceof Response)) { say("could not create " + name + ": " + resp); return; }
    if (resp.status !== 201) { say("could not create " + name + " " + (await errorText(resp))); return; }
    $("new-world-name").value = "";
    say("created " + name + ": showing it");
    await refresh();
    current.choose(name);
  });

  async function remove(name) {
    state.armed = null;
    clearTimeout(state.armedTimer);
    say("deleting " + name + "…");
    const resp = await fetch("/api/v1/worlds/" + encodeURIComponent(name), {
      method: "DELETE",
      headers: { "Authorization": "Bearer " + token() },
    }).catch((err) => err);
    if (!(resp instanceof Response)) { say("could not delete " + name + ": " + resp); return; }
    if (!resp.ok) { say("could not delete " + name + " " + (await errorText(resp))); renderList(); return; }
    say("deleted " + name + " (its journal is kept)");
    if (current.name === name) current.choose(null);
    await refresh();
  }

  current.onChange(() => { if (state.loaded) render(); });
  document.addEventListener("worldloop-admin", () => { if (state.loaded) render(); });
  setInterval(refresh, EVERY_MS);
  refresh();

  window.worldloopWorlds = {
    get worlds() { return state.worlds; },
    get kinds() { return state.kinds; },
    refresh,
  };
})();
