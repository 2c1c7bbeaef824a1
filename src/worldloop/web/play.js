// worldloop viewer: play from the browser. Join as a player (POST /api/v1/players), click the
// map to walk there (a `move_to` command with x, y), say something (a `say` command with text);
// your own avatar is ringed and marked "(you)". Works with any world that implements the player
// protocol and declares `move_to` and `say` (docs/your-world.md). A player belongs to one world:
// it joins, and sends its commands to, the world shown (world.js), and its token is kept per
// world, so switching worlds shows the player of that world (or the join form).
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const viewer = window.worldloopViewer;
  const current = window.worldloopWorld;

  // The default world keeps the key it always had; another world's player has its own.
  const playerKey = () => "worldloop-player" + (current.name === null ? "" : "@" + current.name);

  function stored() {
    try { return JSON.parse(sessionStorage.getItem(playerKey()) || "null"); } catch (_) { return null; }
  }

  function show() {
    const me = stored();
    viewer.me = me ? { entity_id: me.entity_id, name: me.name } : null;
    $("join-form").hidden = !!me;
    $("play-controls").hidden = !me;
    $("me-name").textContent = me ? me.name + " (#" + me.entity_id + ")" : "";
  }

  function say(text) { $("play-msg").textContent = text; }

  async function reply(resp) {
    let data = null;
    try { data = await resp.json(); } catch (_) { data = null; }
    const why = data && data.error ? data.error.message : resp.statusText;
    return { data, why };
  }

  async function command(body) {
    const me = stored();
    if (!me) return null;
    const key = playerKey(); // the world may change while this waits
    const resp = await fetch(current.api("/commands"), {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + me.token,
        "Content-Type": "application/json",
        "Idempotency-Key": crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2),
      },
      body: JSON.stringify(body),
    });
    const { why } = await reply(resp);
    if (resp.status === 401) {
      sessionStorage.removeItem(key);
      show();
      say("your player is gone (the server forgot its token): join again");
    } else if (!resp.ok) {
      say(body.type + " refused (" + resp.status + "): " + why);
    } else {
      say(body.type + ": sent");
    }
    return resp.ok;
  }

  $("join-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("player-name").value.trim();
    if (!name) return;
    say("joining…");
    const key = playerKey(); // the world may change while this waits
    try {
      const resp = await fetch(current.api("/players"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name }),
      });
      const { data, why } = await reply(resp);
      if (resp.status === 201 && data) {
        const me = { token: data.token, entity_id: data.entity_id, name: data.name };
        sessionStorage.setItem(key, JSON.stringify(me));
        say("joined as " + data.name + ": click the map to walk there");
        show();
      } else if (data && data.error && data.error.code === "not_supported") {
        say("this world has no players: " + why);
      } else {
        say("could not join (" + resp.status + "): " + why);
      }
    } catch (err) {
      say("could not join: " + err);
    }
  });

  $("say-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("say-text").value.trim();
    if (!text) return;
    if (await command({ type: "say", text })) $("say-text").value = "";
  });

  $("leave").addEventListener("click", () => {
    sessionStorage.removeItem(playerKey());
    say("");
    show();
  });

  viewer.onMapClick((x, y) => {
    if (!stored()) return;
    command({ type: "move_to", x: Math.round(x * 100) / 100, y: Math.round(y * 100) / 100 });
  });

  current.onChange(() => { say(""); show(); });
  show();
})();
