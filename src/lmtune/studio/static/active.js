// The Active page: one line per strategy (the mean over seeds, its 95% interval shaded) against the labels used,
// the target line, the labels each strategy needed and every arm's rounds; polled every 3 s while a round is
// pending or running. Text is set as text only.
"use strict";
(() => {
  const first = studio.data() || {};
  const api = `/api/active/${encodeURIComponent(first.name)}`;
  const $ = (id) => document.getElementById(id);
  const LOOK = { finished: "finished", running: "running", pending: "queued", failed: "failed", interrupted: "interrupted" };
  let drawn = "";

  function interval(r) {
    if (typeof r.value !== "number") return "—";
    const ci = typeof r.ci_low === "number" && typeof r.ci_high === "number" ? ` [${studio.num(r.ci_low, 3)}, ${studio.num(r.ci_high, 3)}]` : "";
    return `${studio.num(r.value)}${ci}`;
  }
  function chart(v) {
    const series = Object.entries(v.curves).map(([strategy, points], i) => {
      const ok = points.filter((p) => typeof p.n_labelled === "number" && typeof p.mean === "number");
      return { name: strategy, color: studio.COLORS[i % studio.COLORS.length], markers: true,
               points: ok.map((p) => [p.n_labelled, p.mean]),
               band: ok.filter((p) => typeof p.ci_low === "number" && typeof p.ci_high === "number")
                       .map((p) => [p.n_labelled, p.ci_low, p.ci_high]) };
    });
    const hlines = v.target && typeof v.target.value === "number"
      ? [{ name: `target: ${v.target.strategy}'s final ${studio.num(v.target.value)}`, y: v.target.value }] : [];
    charts.xy($("active-chart"), series, { hlines, xLabel: "labelled examples", yLabel: v.metric, width: 820 });
  }
  function reach(v) {
    const items = Object.entries(v.labels_to_reach).map(([strategy, n]) => studio.el("li", { "data-strategy": strategy },
      `${strategy}: `, typeof n === "number" ? `${n} labels to reach the target` : "never reached the target"));
    $("active-reach").replaceChildren(...items);
  }
  function table(v) {
    const rows = v.arms.flatMap((arm) => arm.rounds.map((r) => studio.el("tr", { "data-arm": `${arm.strategy}-s${arm.seed}`, "data-round": r.round },
      studio.el("td", {}, arm.strategy), studio.el("td", { class: "num" }, arm.seed), studio.el("td", { class: "num" }, r.round ?? "—"),
      studio.el("td", { class: "num" }, r.n_labelled ?? "—"),
      studio.el("td", {}, studio.el("span", { class: `status ${LOOK[r.state] || ""}` }, r.state)),
      studio.el("td", { class: "num" }, interval(r)), studio.el("td", { class: "num" }, studio.num(r.selected_score_mean)),
      studio.el("td", { class: "num" }, studio.num(r.seconds)),
      studio.el("td", {}, r.link ? studio.el("a", { href: `/runs/${encodeURIComponent(r.link)}` }, r.run) : (r.run || "—")))));
    $("active-arms").querySelector("tbody").replaceChildren(...rows);
  }
  function render(v) {
    const key = JSON.stringify([v.arms, v.curves, v.labels_to_reach, v.target, v.statement, v.note]);
    if (key === drawn) return;
    drawn = key;
    $("active-statement").textContent = v.statement || "";
    $("active-statement").hidden = !v.statement;
    $("active-note").textContent = v.note || "";
    $("active-note").hidden = !v.note;
    chart(v);
    reach(v);
    table(v);
  }
  render(first);
  if (first.live) {
    const timer = studio.poll(async () => {
      const v = await studio.get(api);
      render(v);
      if (!v.live) clearInterval(timer);
    }, 3000);
  }
})();
