// The Curve page: the learning curve's points with their 95% intervals against n (log axis), the fitted curve
// (solid over the data, dashed beyond), the zero-shot line and the table of points; polled every 3 s while a
// point is pending or running. Text is set as text only.
"use strict";
(() => {
  const first = studio.data() || {};
  const api = `/api/curves/${encodeURIComponent(first.name)}`;
  const $ = (id) => document.getElementById(id);
  const LIVE = ["pending", "running", "queued"];
  const LOOK = { finished: "finished", running: "running", pending: "queued", failed: "failed", interrupted: "interrupted" };
  let drawn = "";

  function interval(p) {
    if (typeof p.value !== "number") return "—";
    const ci = typeof p.ci_low === "number" && typeof p.ci_high === "number" ? ` [${studio.num(p.ci_low, 3)}, ${studio.num(p.ci_high, 3)}]` : "";
    return `${studio.num(p.value)}${ci}`;
  }
  function chart(v) {
    const done = v.points.filter((p) => typeof p.value === "number" && typeof p.n_train === "number");
    const series = [{ name: `${v.metric}${v.system ? ` of ${v.system}` : ""} (95% CI)`, color: studio.COLORS[0], points: [],
                      errors: done.map((p) => [p.n_train, p.value, p.ci_low, p.ci_high]) }];
    if (v.fit_line) {
      series.push({ name: "fitted power law", color: studio.COLORS[1], points: v.fit_line.solid });
      series.push({ name: "extrapolated", color: studio.COLORS[1], points: v.fit_line.dashed, dash: true });
    }
    const hlines = v.baseline && typeof v.baseline.value === "number"
      ? [{ name: `${v.baseline.system} ${studio.num(v.baseline.value)}`, y: v.baseline.value }] : [];
    charts.xy($("curve-chart"), series, { hlines, xLog: true, xLabel: "training examples (n)", yLabel: v.metric, width: 820 });
  }
  function table(v) {
    const rows = v.points.map((p) => studio.el("tr", { "data-n": p.n_train, "data-state": p.state },
      studio.el("td", { class: "num" }, p.n_train ?? "—"), studio.el("td", { class: "num" }, studio.num(p.fraction, 3)),
      studio.el("td", { class: "num" }, p.repeat ?? "—"),
      studio.el("td", {}, studio.el("span", { class: `status ${LOOK[p.state] || ""}` }, p.state)),
      studio.el("td", { class: "num" }, interval(p)), studio.el("td", { class: "num" }, studio.num(p.seconds)),
      studio.el("td", {}, p.link ? studio.el("a", { href: `/runs/${encodeURIComponent(p.link)}` }, p.run) : (p.run || "—"))));
    if (v.baseline) {
      rows.unshift(studio.el("tr", { "data-n": 0 }, studio.el("td", { class: "num" }, "0"), studio.el("td", {}, "—"),
        studio.el("td", {}, "—"), studio.el("td", {}, v.baseline.system), studio.el("td", { class: "num" }, interval(v.baseline)),
        studio.el("td", { class: "num" }, studio.num(v.baseline.seconds)), studio.el("td", {}, v.baseline.link
          ? studio.el("a", { href: `/runs/${encodeURIComponent(v.baseline.link)}` }, v.baseline.run) : (v.baseline.run || "—"))));
    }
    $("curve-points").querySelector("tbody").replaceChildren(...rows);
  }
  function render(v) {
    const key = JSON.stringify([v.points, v.fit, v.baseline, v.note, v.notes, v.statement]);
    if (key === drawn) return;
    drawn = key;
    $("curve-statement").textContent = v.statement || "";
    $("curve-statement").hidden = !v.statement;
    $("curve-note").textContent = v.note || "";
    $("curve-note").hidden = !v.note;
    $("curve-notes").replaceChildren(...(v.notes || []).map((n) => studio.el("p", { class: "note" }, n)));
    const done = v.points.filter((p) => p.state === "finished").length;
    $("curve-progress").textContent = `${done} of ${v.total} points measured` +
      (v.n_train_total ? `; ${v.n_train_total} training examples in all` : "");
    chart(v);
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
