// lmtune studio: the charts of the study pages, as SVG. Text is set with textContent only.
//   charts.xy: lines, points with error bars, shaded intervals and reference lines; the x axis linear or log.
//   charts.parallel: parallel coordinates, one polyline per trial through its values and its objective.
"use strict";
const charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  const finite = (v) => typeof v === "number" && isFinite(v);
  function extent(values, log) {
    const vs = values.filter((v) => finite(v) && (!log || v > 0));
    if (!vs.length) return null;
    let lo = Math.min(...vs), hi = Math.max(...vs);
    if (lo === hi) {
      if (log) { lo /= 2; hi *= 2; } else { const pad = Math.abs(lo) * 0.1 || 1; lo -= pad; hi += pad; }
    }
    return [lo, hi];
  }
  // Where a value falls between lo and hi, 0 to 1 (on a log scale when log).
  function fraction(v, lo, hi, log) {
    if (log) return (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo));
    return (v - lo) / (hi - lo);
  }
  function logTicks(lo, hi) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) { const t = m * 10 ** e; if (t >= lo && t <= hi) ticks.push(t); }
    }
    return ticks.length >= 2 ? ticks : [lo, hi];
  }
  const linearTicks = (lo, hi) => [0, 1, 2, 3, 4].map((i) => lo + ((hi - lo) * i) / 4);
  function legend(items) {
    return studio.el("div", { class: "legend" },
      items.map((s) => studio.el("span", {}, studio.el("i", { style: `background:${s.color}` }), s.name)));
  }

  // series: [{name, color, points: [[x, y]], dash, markers, errors: [[x, y, low, high]], band: [[x, low, high]]}]
  // hlines: [{name, y, color}]
  function xy(container, series, { hlines = [], xLog = false, xLabel = "", yLabel = "", width = 720, height = 340 } = {}) {
    series.forEach((s, i) => { s.color = s.color || studio.COLORS[i % studio.COLORS.length]; });
    hlines.forEach((h) => { h.color = h.color || "#6b7280"; });
    const xs = [], ys = [];
    for (const s of series) {
      for (const [x, y] of s.points || []) { xs.push(x); ys.push(y); }
      for (const [x, y, lo, hi] of s.errors || []) { xs.push(x); ys.push(y, lo, hi); }
      for (const [x, lo, hi] of s.band || []) { xs.push(x); ys.push(lo, hi); }
    }
    hlines.forEach((h) => ys.push(h.y));
    const xr = extent(xs, xLog), yr = extent(ys, false);
    container.replaceChildren();
    const svg = svgEl("svg", { width, height, class: "chart", role: "img", "aria-label": yLabel || "chart" });
    container.append(svg);
    if (!xr || !yr) { svg.append(svgEl("text", { x: 20, y: 30 }, "no data yet")); return svg; }
    const m = { l: 60, r: 16, t: 14, b: 40 };
    const X = (x) => m.l + fraction(x, xr[0], xr[1], xLog) * (width - m.l - m.r);
    const Y = (y) => height - m.b - fraction(y, yr[0], yr[1], false) * (height - m.t - m.b);
    for (const y of linearTicks(...yr)) {
      svg.append(svgEl("line", { x1: m.l, x2: width - m.r, y1: Y(y), y2: Y(y), class: "grid" }));
      svg.append(svgEl("text", { x: m.l - 4, y: Y(y) + 4, "text-anchor": "end" }, studio.num(y, 3)));
    }
    for (const x of xLog ? logTicks(...xr) : linearTicks(...xr)) {
      svg.append(svgEl("line", { x1: X(x), x2: X(x), y1: m.t, y2: height - m.b, class: "grid" }));
      svg.append(svgEl("text", { x: X(x), y: height - m.b + 14, "text-anchor": "middle" }, studio.num(x, 3)));
    }
    svg.append(svgEl("text", { x: (width + m.l) / 2, y: height - 6, "text-anchor": "middle" }, xLabel + (xLog ? " (log scale)" : "")));
    svg.append(svgEl("text", { x: 12, y: m.t + 4, transform: `rotate(-90 12 ${m.t + 4})`, "text-anchor": "end" }, yLabel));
    const ok = (x) => finite(x) && (!xLog || x > 0);
    const path = (pts) => pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    for (const s of series) {
      const band = (s.band || []).filter((b) => ok(b[0]) && finite(b[1]) && finite(b[2]));
      if (band.length) {
        const outline = [...band.map((b) => [b[0], b[2]]), ...band.slice().reverse().map((b) => [b[0], b[1]])];
        svg.append(svgEl("path", { d: path(outline) + "Z", fill: s.color, "fill-opacity": 0.15, stroke: "none", "data-band": s.name }));
      }
    }
    for (const h of hlines.filter((h) => finite(h.y))) {
      svg.append(svgEl("line", { x1: m.l, x2: width - m.r, y1: Y(h.y), y2: Y(h.y), stroke: h.color, "stroke-dasharray": "2,3",
                                 "stroke-width": 1.5, "data-hline": h.name }));
      svg.append(svgEl("text", { x: width - m.r - 4, y: Y(h.y) - 4, "text-anchor": "end" }, h.name));
    }
    for (const s of series) {
      const pts = (s.points || []).filter((p) => ok(p[0]) && finite(p[1]));
      if (pts.length > 1 || (pts.length && !s.markers)) {
        svg.append(svgEl("path", { d: path(pts), fill: "none", stroke: s.color, "stroke-width": 2,
                                   "stroke-dasharray": s.dash ? "6,4" : "none", "data-series": s.name }));
      }
      for (const [x, y, lo, hi] of (s.errors || []).filter((e) => ok(e[0]) && finite(e[1]))) {
        if (finite(lo) && finite(hi)) {
          svg.append(svgEl("line", { x1: X(x), x2: X(x), y1: Y(lo), y2: Y(hi), stroke: s.color, "data-error": s.name }));
          for (const v of [lo, hi]) svg.append(svgEl("line", { x1: X(x) - 4, x2: X(x) + 4, y1: Y(v), y2: Y(v), stroke: s.color }));
        }
        const dot = svgEl("circle", { cx: X(x), cy: Y(y), r: 4, fill: s.color, "data-point": s.name, "data-x": x });
        dot.append(svgEl("title", {}, `${s.name}: ${studio.num(y)} at ${studio.num(x)}`));
        svg.append(dot);
      }
      if (s.markers) for (const [x, y] of pts) svg.append(svgEl("circle", { cx: X(x), cy: Y(y), r: 3, fill: s.color, "data-point": s.name, "data-x": x }));
    }
    container.append(legend([...series.filter((s) => !s.hidden), ...hlines]));
    return svg;
  }

  // axes: [{label, type: "float" | "int" | "choice" | "objective", low, high, log, choices}]
  // lines: [{id, values: [one per axis], score: 0 (worst) to 1 (best), best, title}]
  function parallel(container, axes, lines, { height = 320 } = {}) {
    container.replaceChildren();
    const width = Math.max(560, Math.min(1180, 160 * axes.length));
    const svg = svgEl("svg", { width, height, class: "chart parallel", role: "img", "aria-label": "parallel coordinates" });
    container.append(svg);
    if (!lines.length || !axes.length) { svg.append(svgEl("text", { x: 20, y: 30 }, "no complete trial yet")); return svg; }
    const m = { l: 70, r: 70, t: 34, b: 30 };
    const step = axes.length > 1 ? (width - m.l - m.r) / (axes.length - 1) : 0;
    const scales = axes.map((axis, i) => {
      const column = lines.map((l) => l.values[i]);
      if (axis.type === "choice") {
        const labels = (axis.choices || [...new Set(column)]).map(String);
        return { labels, at: (v) => (labels.length > 1 ? labels.indexOf(String(v)) / (labels.length - 1) : 0.5) };
      }
      const log = !!axis.log && column.every((v) => !finite(v) || v > 0);
      const range = finite(axis.low) && finite(axis.high) && axis.high > axis.low ? [axis.low, axis.high] : extent(column, log) || [0, 1];
      return { range, log, at: (v) => fraction(v, range[0], range[1], log) };
    });
    const X = (i) => m.l + i * step;
    const Y = (f) => height - m.b - f * (height - m.t - m.b);
    const color = (score) => `hsl(${Math.round(210 - 190 * score)}, 75%, ${Math.round(68 - 30 * score)}%)`;
    const ordered = lines.slice().sort((a, b) => (a.best - b.best) || (a.score - b.score));  // the best drawn last, on top
    for (const line of ordered) {
      const fs = line.values.map((v, i) => scales[i].at(v));
      if (fs.some((f) => !finite(f) || f < -0.001)) continue;
      const d = fs.map((f, i) => `${i ? "L" : "M"}${X(i).toFixed(1)},${Y(f).toFixed(1)}`).join("");
      const node = svgEl("path", { d, fill: "none", stroke: color(line.score), "stroke-width": line.best ? 4 : 1.8,
                                   "stroke-opacity": 0.9, "data-trial": line.id });
      node.append(svgEl("title", {}, line.title));
      svg.append(node);
    }
    axes.forEach((axis, i) => {
      svg.append(svgEl("line", { x1: X(i), x2: X(i), y1: m.t, y2: height - m.b, stroke: "#444", "data-axis": axis.label }));
      svg.append(svgEl("text", { x: X(i), y: m.t - 14, "text-anchor": "middle", "font-weight": 600 }, axis.label));
      const s = scales[i];
      const ticks = s.labels ? s.labels.map((label) => [s.at(label), label])
        : (s.log ? logTicks(...s.range) : linearTicks(...s.range)).map((v) => [s.at(v), studio.num(v, 3)]);
      for (const [f, label] of ticks) {
        svg.append(svgEl("line", { x1: X(i) - 3, x2: X(i) + 3, y1: Y(f), y2: Y(f), stroke: "#444" }));
        svg.append(svgEl("text", { x: X(i) + 6, y: Y(f) + 4, "text-anchor": "start" }, label));
      }
    });
    return svg;
  }
  return { xy, parallel };
})();
