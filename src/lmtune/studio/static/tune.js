// The Tune page: summary, best values, leaderboard, importances and parallel coordinates of one search, redrawn
// from /api/tune/<name> every 3 s (a search may be running or resumed at any time). Text is set as text only.
"use strict";
(() => {
  const first = studio.data() || {};
  const api = `/api/tune/${encodeURIComponent(first.name)}`;
  const $ = (id) => document.getElementById(id);
  let drawn = "";
  // Trial states drawn with the colours of the run states they resemble.
  const LOOK = { complete: "finished", pruned: "interrupted", fail: "failed", running: "running", waiting: "queued" };
  const state = (s) => studio.el("span", { class: `status ${LOOK[s] || ""}` }, s);

  function runLink(trial) {
    return trial.run ? studio.el("a", { href: `/runs/${encodeURIComponent(trial.run)}` }, trial.run.split("~").pop()) : "—";
  }
  function leaderboard(v) {
    const head = studio.el("tr", {}, ["trial", "state", v.metric || "objective", ...v.dims.map((d) => d.short),
      "last validation loss", "seconds", "run", "note"].map((h) => studio.el("th", {}, h)));
    const rows = v.trials.map((t) => studio.el("tr", { "data-trial": t.number, "data-state": t.state,
                                                       class: v.best && v.best.number === t.number ? "best" : null },
      studio.el("td", { class: "num" }, t.number), studio.el("td", {}, state(t.state)),
      studio.el("td", { class: "num" }, v.best && v.best.number === t.number ? studio.el("strong", {}, studio.num(t.value)) : studio.num(t.value)),
      v.dims.map((d) => studio.el("td", { class: "num" }, t.shown[d.key] ?? "—")),
      studio.el("td", { class: "num" }, studio.num(t.val_loss)), studio.el("td", { class: "num" }, studio.num(t.seconds)),
      studio.el("td", {}, runLink(t)), studio.el("td", {}, t.reason || "")));
    $("leaderboard").replaceChildren(studio.el("thead", {}, head), studio.el("tbody", {}, rows));
  }
  function best(v) {
    if (!v.best) { $("tune-best").replaceChildren(studio.el("p", { class: "meta" }, "no complete trial yet")); return; }
    const rows = v.dims.map((d) => studio.el("tr", {}, studio.el("th", {}, d.key), studio.el("td", {}, v.best.shown[d.key] ?? "—")));
    $("tune-best").replaceChildren(
      studio.el("p", {}, `trial ${v.best.number}: ${v.metric} `, studio.el("strong", {}, studio.num(v.best.value)), " ",
                v.best.run ? studio.el("a", { href: `/runs/${encodeURIComponent(v.best.run)}` }, "its run") : ""),
      studio.el("table", { id: "best-values" }, studio.el("tbody", {}, rows)));
  }
  function importances(v) {
    if (!v.importances) {
      $("importances").replaceChildren(studio.el("p", { class: "meta" }, v.importances_note || "not computed yet"));
      return;
    }
    const box = studio.el("div", {});
    $("importances").replaceChildren(box, studio.el("p", { class: "meta" }, "fANOVA over the complete trials; they sum to 1"));
    studio.barChart(box, v.importances.map((i) => ({ name: i.short, value: i.importance, interval: null, best: false })),
                    { label: "importance (fANOVA)" });
  }
  function parallel(v) {
    const complete = v.trials.filter((t) => t.state === "complete" && typeof t.value === "number");
    const values = complete.map((t) => t.value);
    const lo = Math.min(...values), hi = Math.max(...values);
    const score = (x) => (hi > lo ? (v.maximize ? (x - lo) / (hi - lo) : (hi - x) / (hi - lo)) : 1);
    const axes = [...v.dims.map((d) => ({ label: d.short, type: d.type, low: d.low, high: d.high, log: d.log, choices: d.choices })),
                  { label: v.metric || "objective", type: "objective" }];
    const lines = complete.map((t) => ({ id: t.number, values: [...v.dims.map((d) => t.params[d.key]), t.value],
      score: score(t.value), best: !!v.best && v.best.number === t.number,
      title: `trial ${t.number}: ${v.metric} ${studio.num(t.value)}; ${v.dims.map((d) => `${d.short} ${t.shown[d.key] ?? "—"}`).join(", ")}` }));
    charts.parallel($("parallel"), axes, lines);
  }
  function render(v) {
    const key = JSON.stringify([v.trials, v.importances, v.importances_note, v.summary, v.note]);
    if (key === drawn) return;
    drawn = key;
    $("tune-summary").textContent = v.summary || "";
    $("tune-note").textContent = v.note || "";
    $("tune-note").hidden = !v.note;
    best(v);
    leaderboard(v);
    importances(v);
    parallel(v);
  }
  render(first);
  studio.poll(async () => render(await studio.get(api)), 3000);
})();
