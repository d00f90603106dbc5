// The Runs page: the table is rebuilt from /api/runs every 2 s, keeping sort, filter and selection.
"use strict";
(() => {
  const state = { rows: (studio.data() || {}).runs || [], sort: "started_at", desc: true, selected: new Set() };
  const tbody = document.querySelector("#runs tbody");
  const filter = document.getElementById("filter");
  const statusFilter = document.getElementById("status-filter");
  const compare = document.getElementById("compare-selected");
  const text = (r) => [r.name, r.title, r.task, r.model, r.method, r.winner].join(" ").toLowerCase();

  function metric(r) {
    if (r.value === null || r.value === undefined) return "—";
    const ci = r.ci_low !== null && r.ci_low !== undefined ? ` [${studio.num(r.ci_low, 3)}–${studio.num(r.ci_high, 3)}]` : "";
    return `${r.metric} ${studio.num(r.value)}${ci}`;
  }
  function row(r) {
    const box = studio.el("input", { type: "checkbox", "data-run": r.name, checked: state.selected.has(r.name),
                                     onchange: (e) => { e.target.checked ? state.selected.add(r.name) : state.selected.delete(r.name); update(); } });
    const link = r.status === "queued" ? r.name : studio.el("a", { href: `/runs/${encodeURIComponent(r.name)}` }, r.name);
    const title = r.title && r.title !== r.name ? studio.el("small", {}, ` ${r.title}`) : null;
    return studio.el("tr", { "data-run": r.name, "data-status": r.status },
      studio.el("td", {}, box), studio.el("td", {}, link, title), studio.el("td", {}, r.task || "—"),
      studio.el("td", {}, r.model || "—"), studio.el("td", {}, r.method || "—"),
      studio.el("td", { title: r.error || "" }, studio.status(r.status)),
      studio.el("td", { class: "num" }, metric(r)), studio.el("td", {}, r.winner || "—"),
      studio.el("td", {}, studio.time(r.started_at)), studio.el("td", { class: "num" }, studio.duration(r.duration_s)));
  }
  function render() {
    const q = filter.value.trim().toLowerCase(), st = statusFilter.value;
    const rows = state.rows.filter((r) => (!q || text(r).includes(q)) && (!st || r.status === st));
    const key = state.sort, sign = state.desc ? -1 : 1;
    rows.sort((a, b) => {
      const x = a[key], y = b[key];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x > y ? 1 : -1) * sign;
    });
    tbody.replaceChildren(...rows.map(row));
    document.getElementById("empty").hidden = state.rows.length > 0;
    update();
  }
  function update() {
    compare.disabled = state.selected.size < 2;
  }
  document.querySelectorAll("button.sort").forEach((b) => b.addEventListener("click", () => {
    state.desc = state.sort === b.dataset.key ? !state.desc : false;
    state.sort = b.dataset.key;
    render();
  }));
  filter.addEventListener("input", render);
  statusFilter.addEventListener("change", render);
  compare.addEventListener("click", () => {
    const query = [...state.selected].map((n) => `run=${encodeURIComponent(n)}`).join("&");
    location.href = `/compare?${query}`;
  });
  render();
  setInterval(async () => {
    try { state.rows = (await studio.get("/api/runs")).runs; render(); } catch (e) { console.warn(e.message); }
  }, 2000);
})();
