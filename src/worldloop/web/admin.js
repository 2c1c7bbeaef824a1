// worldloop viewer: the admin panel (pause, step, rate, jobs and tasks), with the admin token.
// The token is checked when entered and kept in sessionStorage only when the server accepts it.
// The token is the server's (every world's); the controls and jobs are the shown world's
// (world.js). A `worldloop-admin` event on document tells worlds.js the token came or went.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "worldloop-admin-token";
  const current = window.worldloopWorld;

  // ---- admin ------------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showAdmin() {
    const has = token() !== "";
    $("admin-controls").hidden = !has;
    $("token-form").hidden = has;
    document.dispatchEvent(new Event("worldloop-admin"));
  }

  async function admin(path, body) {
    const msg = $("admin-msg");
    msg.textContent = "…";
    try {
      const resp = await fetch(current.api("/admin/" + path), {
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

  // ---- tasks (offloaded work: the admin tasks API, newest first) ---------------------------
  const TASK_SHOWN = 8;
  const TASK_STATES = {
    sent: "pending", pending: "pending", retry: "pending", started: "running",
    succeeded: "ok", failed: "failed", timed_out: "timed out",
  };

  function renderTasks(tasks) {
    const body = $("tasks-table").tBodies[0];
    body.replaceChildren();
    for (const task of tasks.slice(-TASK_SHOWN).reverse()) {
      const row = document.createElement("tr");
      row.dataset.task = task.id;
      row.dataset.state = task.state;
      cell(row, task.task).title = task.id;
      cell(row, "t" + task.tick);
      const shown = TASK_STATES[task.state] || task.state;
      const bad = task.state === "failed" || task.state === "timed_out";
      cell(row, shown, bad ? "bad state" : "state").title = task.error || "";
      body.appendChild(row);
    }
    $("tasks-table").hidden = tasks.length === 0;
  }

  async function adminGet(path) {
    if (path === "tasks" && current.name !== null) return null; // the default world's only
    const resp = await fetch(current.api("/admin/" + path), {
      headers: { "Authorization": "Bearer " + token() },
    });
    return resp.ok ? resp.json() : null;
  }

  async function refreshJobs() {
    if (!token()) { $("jobs").hidden = true; return; }
    try {
      const [jobs, tasks] = await Promise.all([adminGet("jobs"), adminGet("tasks")]);
      const jobList = (jobs && jobs.jobs) || [];
      const taskList = (tasks && tasks.tasks) || [];
      renderJobs(jobList);
      renderTasks(taskList);
      $("jobs-table").hidden = jobList.length === 0;
      $("jobs").hidden = jobList.length === 0 && taskList.length === 0;
    } catch (_) {
      $("jobs").hidden = true;
    }
  }
  setInterval(refreshJobs, 2000);

  // A token is checked when it is entered (GET /admin/status) and kept only when it works.
  $("token-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    const msg = $("admin-msg");
    if (!value) return;
    msg.textContent = "checking…";
    let resp = null;
    try {
      resp = await fetch("/api/v1/admin/status", { headers: { "Authorization": "Bearer " + value } });
    } catch (err) {
      msg.textContent = "could not check the token: " + err;
      return;
    }
    if (!resp.ok) {
      let data = null;
      try { data = await resp.json(); } catch (_) { data = null; }
      const why = data && data.error ? data.error.message : resp.statusText;
      msg.textContent = resp.status === 401 || resp.status === 403
        ? "wrong token (" + resp.status + "): " + why
        : "admin API unavailable (" + resp.status + "): " + why;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    msg.textContent = "token accepted";
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

  current.onChange(() => { $("admin-msg").textContent = ""; refreshJobs(); });
  showAdmin();
  refreshJobs();
})();
