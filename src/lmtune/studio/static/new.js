// The New-run page: pick or write a recipe, check it (problems listed with their key paths), start it, and
// the studio's queue (refreshed every 2 s) with cancel and resume buttons. Text goes in with textContent only.
"use strict";
(() => {
  const page = studio.data() || {};
  const picker = document.getElementById("recipe-file");
  const text = document.getElementById("recipe-text");
  const problems = document.getElementById("problems");
  const verdict = document.getElementById("verdict");
  const startButton = document.getElementById("start");
  const validateButton = document.getElementById("validate");
  const tbody = document.querySelector("#queue tbody");
  let source = page.from || null;  // where the text came from: a recipe file's name or a run's
  let loaded = text.value;  // the text as loaded: an edit since then is not thrown away without asking

  function showProblems(error) {
    const list = (error.payload && error.payload.problems) || [{ key: null, message: error.message }];
    problems.replaceChildren(...list.map((p) => studio.el("li", {}, p.key ? studio.el("code", {}, p.key) : null,
                                                          p.key ? `: ${p.message}` : p.message)));
    verdict.textContent = `${list.length} problem${list.length === 1 ? "" : "s"}; nothing was started`;
  }
  function clearProblems(message) {
    problems.replaceChildren();
    verdict.textContent = message || "";
  }
  async function busy(fn) {
    startButton.disabled = validateButton.disabled = true;
    try { await fn(); } finally { validateButton.disabled = false; startButton.disabled = !page.queue; }
  }

  async function loadFile() {
    const name = picker.value;
    if (!name) return;
    if (text.value !== loaded && text.value.trim() && !confirm("Replace the edited recipe with " + name + "?")) return;
    try {
      const recipe = await studio.get(`/api/recipes/${encodeURIComponent(name)}`);
      text.value = loaded = recipe.text;
      source = name;
      clearProblems(`loaded ${name}`);
    } catch (e) { showProblems(e); }
  }
  async function validate() {
    await busy(async () => {
      try {
        const result = await studio.post("/api/validate", { text: text.value });
        clearProblems(`valid: it would run as ${result.name}`);
      } catch (e) { showProblems(e); }
    });
  }
  async function start() {
    await busy(async () => {
      try {
        const result = await studio.post("/api/runs", { text: text.value, source });
        clearProblems(`queued as ${result.name}`);
        location.href = result.url;
      } catch (e) { showProblems(e); }
    });
  }

  async function act(name, action) {
    try {
      await studio.post(`/api/runs/${encodeURIComponent(name)}/${action}`);
      await refresh();
    } catch (e) { alert(`${action} ${name}: ${e.message}`); }
  }
  function row(job) {
    const link = studio.el("a", { href: `/runs/${encodeURIComponent(job.name)}` }, job.name);
    const buttons = [];
    if (job.status === "queued" || job.status === "running") {
      buttons.push(studio.el("button", { type: "button", class: "cancel", onclick: () => act(job.name, "cancel") }, "Cancel"));
    }
    if ((job.status === "cancelled" || job.status === "failed") && job.latest) {
      buttons.push(studio.el("button", { type: "button", class: "resume", onclick: () => act(job.name, "resume") }, "Resume"));
    }
    return studio.el("tr", { "data-run": job.name, "data-status": job.status },
      studio.el("td", {}, link, job.source ? studio.el("small", {}, ` from ${job.source}`) : null),
      studio.el("td", {}, studio.status(job.status)), studio.el("td", {}, studio.time(job.created_at)),
      studio.el("td", {}, studio.time(job.finished_at)), studio.el("td", {}, job.error || ""),
      studio.el("td", {}, buttons));
  }
  function render(jobs) {
    const seen = new Set();
    for (const job of jobs) { job.latest = !seen.has(job.name); seen.add(job.name); }  // newest first
    tbody.replaceChildren(...jobs.map(row));
    document.getElementById("queue-empty").hidden = jobs.length > 0;
  }
  async function refresh() { render((await studio.get("/api/queue")).jobs); }

  page.queue = !startButton.disabled;
  if (picker) picker.addEventListener("change", loadFile);
  validateButton.addEventListener("click", validate);
  startButton.addEventListener("click", start);
  render(page.jobs || []);
  setInterval(() => refresh().catch((e) => console.warn(e.message)), 2000);
})();
