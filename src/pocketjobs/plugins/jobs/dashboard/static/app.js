// pocketjobs jobs dashboard: plain JS, no dependencies, same-origin requests only.
// Every piece of data reaches the DOM through textContent / Text nodes, never as HTML.
"use strict";
(() => {
  const TOKEN_KEY = "pocketjobs.jobs.token";
  const EMAIL_KEY = "pocketjobs.jobs.email";
  const REFRESH_MS = 3000;
  // The page is served at <prefix>/_/jobs: no prefix at the top level, "/jobs" under
  // host.mount("/jobs", ...). BASE is <prefix>/, and every request goes to <prefix>/api/...
  const BASE = new URL("../", location.href);
  const apiUrl = (path) => new URL(path, BASE);
  const $ = (id) => document.getElementById(id);
  const state = {
    topic: "", status: "", limit: 20, offset: 0, total: 0,
    selected: null, job: null, busy: false, again: false, banner: null, timer: null,
  };

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  const token = () => localStorage.getItem(TOKEN_KEY);

  function errorMessage(status, body) {
    let message = body && typeof body.message === "string" ? body.message : `Request failed (HTTP ${status}).`;
    const data = body && typeof body.data === "object" && body.data ? body.data : {};
    const fields = Object.entries(data)
      .filter(([, v]) => v && typeof v.message === "string")
      .map(([k, v]) => `${k}: ${v.message}`);
    if (fields.length) message += ` (${fields.join("; ")})`;
    return message;
  }

  async function api(method, path, body, auth = true) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && token()) headers.Authorization = token();
    let res;
    try {
      res = await fetch(apiUrl(path), {
        method, headers, cache: "no-store", credentials: "omit",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, "Cannot reach the server.");
    }
    let data = null;
    try { data = await res.json(); } catch { data = null; }
    if (!res.ok) {
      if (auth && res.status === 401) signOut("Your session has expired: please sign in again.");
      throw new ApiError(res.status, errorMessage(res.status, data));
    }
    return data;
  }

  // DOM helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "className") node.className = v;
      else node.setAttribute(k, v);
    }
    node.append(...children); // strings become Text nodes
    return node;
  }
  const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };
  const badge = (status) => el("span", { className: `badge badge-${status}` }, status);

  const pad = (n) => String(n).padStart(2, "0");
  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function relTime(iso) {
    if (!iso) return "—";
    const s = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
    const a = Math.abs(s);
    if (Number.isNaN(a)) return String(iso);
    if (a < 5) return "now";
    const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m`
      : a < 86400 ? `${Math.floor(a / 3600)}h` : `${Math.floor(a / 86400)}d`;
    return s < 0 ? `${text} ago` : `in ${text}`;
  }
  const fullTime = (iso) => (iso ? `${fmtTime(iso)} (${relTime(iso)})` : "—");

  // banner

  function showBanner(message, source = "error", kind = "error") {
    state.banner = source;
    $("banner").className = `banner banner-${kind}`;
    setText($("banner-text"), message);
    $("banner").hidden = false;
  }
  function clearBanner(source) {
    if (source && state.banner !== source) return;
    state.banner = null;
    $("banner").hidden = true;
  }
  function notice(message) {
    showBanner(message, "notice", "info");
    setTimeout(() => clearBanner("notice"), 4000);
  }

  // session

  function showLogin() {
    $("dashboard").hidden = true;
    $("session").hidden = true;
    $("login").hidden = false;
    stopTimer();
    $("email").value = $("email").value || localStorage.getItem(EMAIL_KEY) || "";
    ($("email").value ? $("password") : $("email")).focus();
  }
  function showDashboard() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("session").hidden = false;
    setText($("who"), localStorage.getItem(EMAIL_KEY) || "");
    startTimer();
    refresh();
  }
  function signOut(message) {
    localStorage.removeItem(TOKEN_KEY);
    closeDetails();
    if (message) showBanner(message, "auth"); else clearBanner();
    showLogin();
  }

  async function login(event) {
    event.preventDefault();
    const submit = $("login-submit");
    submit.disabled = true;
    try {
      const email = $("email").value.trim();
      const res = await api("POST", "api/collections/_superusers/auth-with-password",
        { identity: email, password: $("password").value }, false);
      localStorage.setItem(TOKEN_KEY, res.token);
      localStorage.setItem(EMAIL_KEY, (res.record && res.record.email) || email);
      $("password").value = "";
      clearBanner();
      showDashboard();
    } catch (e) {
      showBanner(e.message, "login");
    } finally {
      submit.disabled = false;
    }
  }

  // data

  function renderStats(stats) {
    for (const node of document.querySelectorAll("#stats [data-stat]")) {
      const key = node.dataset.stat;
      const value = key === "success_rate"
        ? (stats.completed + stats.failed ? `${(stats.success_rate * 100).toFixed(1)}%` : "—")
        : String(stats[key]);
      setText(node.querySelector(".value"), value);
      if (node.dataset.filter !== undefined) {
        node.classList.toggle("active", node.dataset.filter === state.status);
      }
    }
    const orphans = Object.entries(stats.orphaned_topics || {}).map(([topic, n]) => el("li",
      { "data-topic": topic }, `Topic ${topic}: ${n} pending job${n === 1 ? "" : "s"}, no worker handles it`));
    for (const [queue, n] of Object.entries(stats.orphaned_queues || {})) {
      orphans.push(el("li", { "data-queue": queue },
        `Queue ${queue}: ${n} pending job${n === 1 ? "" : "s"}, no worker works on it`));
    }
    $("orphans").replaceChildren(...orphans);
    $("orphans").hidden = !orphans.length;
  }

  function renderQueues(list) {
    const num = (value) => el("td", { className: "num" }, value === null ? "—" : String(value));
    $("queue-rows").replaceChildren(...list.items.map((q) => el("tr", { "data-queue": q.name },
      el("td", { className: "topic" }, q.name),
      el("td", null, el("span", { className: `badge badge-${q.paused ? "paused" : "active"}` },
        q.paused ? "paused" : "active")),
      num(q.pending), num(q.processing), num(q.concurrency), num(q.global_limit),
      el("td", { className: "num" }, el("button", { type: "button", className: "btn",
        "data-action": q.paused ? "resume" : "pause" }, q.paused ? "Resume" : "Pause")))));
  }

  const timeCell = (iso, ...extra) => el("td", null, iso
    ? el("time", { datetime: iso, title: relTime(iso) }, fmtTime(iso)) : "—", ...extra);

  function renderSchedules(list) {
    const rows = list.items.map((s) => {
      const status = s.active ? "active" : "inactive";
      const job = s.last_job_id ? [" ", el("button", { type: "button", className: "btn",
        "data-job": s.last_job_id, title: `Open job ${s.last_job_id}` }, "Job")] : [];
      return el("tr", { "data-schedule": s.name, className: s.active ? "" : "inactive" },
        el("td", { className: "topic", title: s.name }, s.name),
        el("td", null, s.topic),
        el("td", null, el("code", null, s.cron), " ", el("span", { className: "muted" }, s.tz)),
        timeCell(s.next_run),
        timeCell(s.last_run, ...job),
        el("td", null, s.catch_up),
        el("td", null, s.queue),
        el("td", null, el("span", { className: `badge badge-${status}`, title: s.active
          ? `A running process registers it${s.here ? " (this server does)" : ""}.`
          : s.here ? "This server registers it, but no running dispatcher has written it."
            : "No running process registers it." }, status)),
        // Deleting one that this server registers changes nothing: its dispatcher writes it back.
        el("td", { className: "num" }, s.active || s.here ? "" : el("button", { type: "button",
          className: "btn danger", "data-action": "delete" }, "Delete")));
    });
    if (!rows.length) {
      rows.push(el("tr", { className: "empty" }, el("td", { colspan: "9" },
        "No schedules: periodic jobs (store.periodic, or a handler's cron=) show up here.")));
    }
    $("schedule-rows").replaceChildren(...rows);
  }

  function renderRows(page) {
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.id : undefined;
    const rows = page.items.map((job) => {
      const tr = el("tr", { tabindex: "0", "data-id": job.id, "data-status": job.status },
        el("td", null, el("code", { title: job.id }, job.id.slice(-8))),
        el("td", { className: "topic" }, job.topic),
        el("td", null, job.queue),
        el("td", null, badge(job.status)),
        el("td", { className: "num" }, `${job.retries}/${job.max_retries}`),
        el("td", { title: fmtTime(job.run_at) }, relTime(job.run_at)),
        el("td", { title: fmtTime(job.updated) }, relTime(job.updated)));
      if (job.id === state.selected) tr.classList.add("selected");
      return tr;
    });
    if (!rows.length) {
      const filtered = state.topic || state.status;
      rows.push(el("tr", { className: "empty" },
        el("td", { colspan: "7" }, filtered ? "No jobs match these filters." : "No jobs yet.")));
    }
    $("rows").replaceChildren(...rows);
    const known = new Set([...$("topics").options].map((o) => o.value));
    for (const job of page.items) {
      if (!known.has(job.topic)) { known.add(job.topic); $("topics").append(el("option", { value: job.topic })); }
    }
    if (focused) {
      const again = $("rows").querySelector(`tr[data-id="${CSS.escape(focused)}"]`);
      if (again) again.focus({ preventScroll: true });
    }
    state.total = page.total;
    const last = page.offset + page.items.length;
    setText($("range"), page.total ? `${page.offset + 1}–${last} of ${page.total}` : "0 of 0");
    $("prev").disabled = page.offset <= 0;
    $("next").disabled = last >= page.total;
  }

  function renderDetails(job) {
    state.selected = job.id;
    state.job = job;
    setText($("d-id"), job.id);
    setText($("d-topic"), job.topic);
    setText($("d-queue"), job.queue);
    $("d-status").replaceChildren(badge(job.status));
    setText($("d-retries"), `${job.retries} of ${job.max_retries}`);
    for (const key of ["run_at", "created", "updated", "locked_until", "first_attempted_at",
      "attempted_at", "finished_at", "cancel_requested_at"]) {
      setText($(`d-${key}`), fullTime(job[key]));
    }
    setText($("d-timeout"), job.timeout === null ? "—" : `${job.timeout}s`);
    setText($("d-attempted_by"), job.attempted_by || "—");
    const errors = (job.errors || []).map((e) => el("li", null,
      el("span", { className: "muted" }, `${fmtTime(e.at)} · attempt ${e.attempt}`), el("pre", null, e.error)));
    if (!errors.length) errors.push(el("li", { className: "muted" }, "—"));
    $("d-errors").replaceChildren(...errors);
    setText($("d-payload"), JSON.stringify(job.payload === undefined ? null : job.payload, null, 2));
    setText($("d-error"), job.last_error || "—");
    $("d-error").classList.toggle("none", !job.last_error);
    const is = (...statuses) => statuses.includes(job.status);
    $("requeue").hidden = !is("failed", "cancelled");
    $("delete").hidden = is("processing");
    $("cancel").hidden = !is("pending", "processing") || !!job.cancel_requested_at;
    $("details").hidden = false;
    for (const tr of $("rows").querySelectorAll("tr[data-id]")) {
      tr.classList.toggle("selected", tr.dataset.id === job.id);
    }
  }

  function closeDetails() {
    state.selected = null;
    state.job = null;
    $("details").hidden = true;
    for (const tr of $("rows").querySelectorAll("tr.selected")) tr.classList.remove("selected");
  }

  async function loadDetails(id) {
    try {
      const job = await api("GET", `api/jobs/${encodeURIComponent(id)}`);
      if (state.selected === id) renderDetails(job);
    } catch (e) {
      if (state.selected !== id || e.status === 401) return; // stale, or already signed out
      if (e.status !== 404) throw e;
      closeDetails();
      notice("The job no longer exists.");
    }
  }

  async function refresh(fromTimer = false) {
    if (!token()) return;
    if (state.busy) { if (!fromTimer) state.again = true; return; }
    state.busy = true;
    try {
      const query = new URLSearchParams({ limit: state.limit, offset: state.offset });
      if (state.topic) query.set("topic", state.topic);
      if (state.status) query.set("status", state.status);
      const [stats, page, queues, schedules] = await Promise.all([
        api("GET", "api/jobs/stats"), api("GET", `api/jobs?${query}`), api("GET", "api/jobs/queues"),
        api("GET", "api/jobs/schedules"),
      ]);
      if (!page.items.length && page.total > 0 && state.offset > 0) {
        // The page emptied (jobs deleted or finished): step back to the last page.
        state.offset = Math.floor((page.total - 1) / state.limit) * state.limit;
        state.again = true;
        return;
      }
      renderStats(stats);
      renderRows(page);
      renderQueues(queues);
      renderSchedules(schedules);
      if (state.selected) await loadDetails(state.selected);
      clearBanner("refresh");
      setText($("updated"), `Updated ${fmtTime(new Date().toISOString()).slice(11)}`);
    } catch (e) {
      if (e.status !== 401) showBanner(e.message, "refresh");
    } finally {
      state.busy = false;
      if (state.again) { state.again = false; refresh(); }
    }
  }

  async function act(kind) {
    const job = state.job;
    if (!job) return;
    const question = {
      requeue: "It becomes pending and runs again with its retries reset.",
      cancel: "A pending job never runs; a running one is asked to stop.",
      delete: "This cannot be undone.",
    }[kind];
    if (!window.confirm(`${kind[0].toUpperCase()}${kind.slice(1)} job ${job.id} (${job.topic})?\n\n${question}`)) return;
    const buttons = ["requeue", "cancel", "delete"].map($);
    for (const b of buttons) b.disabled = true;
    try {
      const path = `api/jobs/${encodeURIComponent(job.id)}`;
      if (kind !== "delete") {
        const done = await api("POST", `${path}/${kind}`);
        renderDetails(done);
        notice(kind === "requeue" ? "Job requeued." : done.status === "cancelled" ? "Job cancelled." : "Cancel requested.");
      } else {
        await api("DELETE", path);
        closeDetails();
        notice("Job deleted.");
      }
    } catch (e) {
      if (e.status !== 401) showBanner(e.message, "action");
    } finally {
      for (const b of buttons) b.disabled = false;
      refresh();
    }
  }

  async function switchQueue(name, action) {
    if (action === "pause" &&
      !window.confirm(`Pause queue ${name}?\n\nNo job of it starts, in any process, until it is resumed.`)) return;
    try {
      await api("POST", `api/jobs/queues/${encodeURIComponent(name)}/${action}`);
      notice(`Queue ${name} ${action}d.`);
    } catch (e) {
      if (e.status !== 401) showBanner(e.message, "action");
    } finally {
      refresh();
    }
  }

  async function deleteSchedule(button) {
    const name = button.closest("tr").dataset.schedule;
    if (!window.confirm(`Delete schedule ${name}?\n\nNo running process registers it. ` +
      "Its jobs are kept; a process that registers it again writes it back.")) return;
    button.disabled = true;
    try {
      await api("DELETE", `api/jobs/schedules/${encodeURIComponent(name)}`);
      notice(`Schedule ${name} deleted.`);
    } catch (e) {
      if (e.status !== 401) showBanner(e.message, "action");
    } finally {
      refresh();
    }
  }

  // live refresh

  function startTimer() {
    stopTimer();
    if ($("live").checked) {
      state.timer = setInterval(() => { if (!document.hidden) refresh(true); }, REFRESH_MS);
    }
    document.body.classList.toggle("live", $("live").checked);
  }
  function stopTimer() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  // wiring

  function setFilter(changes) {
    Object.assign(state, changes, { offset: 0 });
    $("status").value = state.status;
    refresh();
  }

  function init() {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", () => signOut());
    $("refresh").addEventListener("click", () => refresh());
    $("live").addEventListener("change", startTimer);
    $("banner-close").addEventListener("click", () => clearBanner());
    $("details-close").addEventListener("click", closeDetails);
    $("requeue").addEventListener("click", () => act("requeue"));
    $("delete").addEventListener("click", () => act("delete"));
    $("cancel").addEventListener("click", () => act("cancel"));
    let debounce = null;
    $("topic").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => setFilter({ topic: $("topic").value.trim() }), 400);
    });
    $("status").addEventListener("change", () => setFilter({ status: $("status").value }));
    $("limit").addEventListener("change", () => setFilter({ limit: Number($("limit").value) }));
    $("prev").addEventListener("click", () => {
      state.offset = Math.max(0, state.offset - state.limit);
      refresh();
    });
    $("next").addEventListener("click", () => {
      if (state.offset + state.limit < state.total) state.offset += state.limit;
      refresh();
    });
    for (const card of document.querySelectorAll("#stats [data-filter]")) {
      card.addEventListener("click", () => setFilter({ status: card.dataset.filter }));
    }
    const openJob = (id) => {
      state.selected = id;
      loadDetails(id).then(() => {
        // On a narrow screen the panel sits below the list: bring it into view.
        const top = $("details").getBoundingClientRect().top;
        if (state.selected === id && top > window.innerHeight * 0.6) $("details").scrollIntoView();
      }, (e) => showBanner(e.message, "action"));
    };
    const open = (tr) => { if (tr && tr.dataset.id) openJob(tr.dataset.id); };
    $("rows").addEventListener("click", (e) => open(e.target.closest("tr")));
    $("queue-rows").addEventListener("click", (e) => {
      const button = e.target.closest("button[data-action]");
      if (button) { button.disabled = true; switchQueue(button.closest("tr").dataset.queue, button.dataset.action); }
    });
    $("schedule-rows").addEventListener("click", (e) => {
      const button = e.target.closest("button");
      if (button && button.dataset.job) openJob(button.dataset.job);
      else if (button && button.dataset.action === "delete") deleteSchedule(button);
    });
    $("rows").addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(e.target.closest("tr")); }
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !$("details").hidden) closeDetails();
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(true); });
    window.addEventListener("storage", (e) => {
      if (e.key === TOKEN_KEY && !e.newValue) signOut();
    });
    if (token()) showDashboard(); else showLogin();
  }

  init();
})();
