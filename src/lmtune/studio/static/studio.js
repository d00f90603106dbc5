// lmtune studio: helpers every page uses. Text from runs and users is written with textContent only.
"use strict";
const studio = (() => {
  const WRITE_HEADER = { "X-Lmtune-Studio": "1" };  // required on every state-changing request
  function data() {
    const el = document.getElementById("page-data");
    return el ? JSON.parse(el.textContent) : null;
  }
  async function request(method, url, body) {
    const options = { method, headers: { ...WRITE_HEADER }, credentials: "same-origin" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    let payload = null;
    try { payload = await response.json(); } catch (e) { payload = null; }
    if (!response.ok) {
      const error = new Error((payload && payload.error && payload.error.message) || response.statusText);
      error.status = response.status; error.payload = payload;
      throw error;
    }
    return payload;
  }
  // el("td", {class: "num"}, "text", childNode, ...): strings become text nodes, never HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  // Calls fn now and every ms milliseconds, never two at once; errors are shown once in the console.
  function poll(fn, ms) {
    let busy = false;
    const tick = async () => {
      if (busy) return;
      busy = true;
      try { await fn(); } catch (e) { console.warn("studio poll:", e.message); } finally { busy = false; }
    };
    tick();
    return setInterval(tick, ms);
  }
  function num(value, digits = 4) {
    return typeof value === "number" && isFinite(value) ? Number(value.toPrecision(digits)).toString() : "—";
  }
  function duration(seconds) {
    if (typeof seconds !== "number") return "—";
    const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
  }
  function time(epoch) {
    if (typeof epoch !== "number") return "—";
    const d = new Date(epoch * 1000), pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }
  function status(state) { return el("span", { class: `status ${state}` }, state); }
  const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563"];
  // A line chart as SVG in `container`: series = [{name, points: [[x, y], ...], color?, dash?}].
  function lineChart(container, series, { width = 560, height = 260, xLabel = "step", yLabel = "" } = {}) {
    const ns = "http://www.w3.org/2000/svg";
    const svgEl = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      if (text !== undefined) node.textContent = text;
      return node;
    };
    const points = series.flatMap((s) => s.points).filter((p) => isFinite(p[0]) && isFinite(p[1]));
    container.replaceChildren();
    const svg = svgEl("svg", { width, height, class: "chart", role: "img", "aria-label": yLabel || "chart" });
    container.append(svg);
    if (!points.length) { svg.append(svgEl("text", { x: 20, y: 30 }, "no data yet")); return svg; }
    const m = { l: 56, r: 12, t: 12, b: 36 };
    let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (width - m.l - m.r);
    const Y = (y) => height - m.b - ((y - y0) / (y1 - y0)) * (height - m.t - m.b);
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4;
      svg.append(svgEl("line", { x1: m.l, x2: width - m.r, y1: Y(y), y2: Y(y), class: "grid" }));
      svg.append(svgEl("text", { x: m.l - 4, y: Y(y) + 4, "text-anchor": "end" }, num(y, 3)));
      const x = x0 + ((x1 - x0) * i) / 4;
      svg.append(svgEl("text", { x: X(x), y: height - m.b + 14, "text-anchor": "middle" }, num(x, 4)));
    }
    svg.append(svgEl("text", { x: (width + m.l) / 2, y: height - 4, "text-anchor": "middle" }, xLabel));
    svg.append(svgEl("text", { x: 12, y: m.t + 4, transform: `rotate(-90 12 ${m.t + 4})`, "text-anchor": "end" }, yLabel));
    series.forEach((s, i) => {
      const pts = s.points.filter((p) => isFinite(p[0]) && isFinite(p[1]));
      if (!pts.length) return;
      const color = s.color || COLORS[i % COLORS.length];
      const path = pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      svg.append(svgEl("path", { d: path, fill: "none", stroke: color, "stroke-width": 2,
                                 "stroke-dasharray": s.dash ? "5,4" : "none", "data-series": s.name }));
      if (pts.length === 1) svg.append(svgEl("circle", { cx: X(pts[0][0]), cy: Y(pts[0][1]), r: 3, fill: color }));
    });
    const legend = el("div", { class: "legend" },
      series.map((s, i) => el("span", {}, el("i", { style: `background:${s.color || COLORS[i % COLORS.length]}` }), s.name)));
    container.append(legend);
    return svg;
  }
  // Horizontal bars with 95% intervals: bars = [{name, value, interval: [low, high] | null, best}].
  function barChart(container, bars, { width = 560, label = "" } = {}) {
    const ns = "http://www.w3.org/2000/svg", row = 30, m = { l: 150, r: 60, t: 8, b: 34 };
    const height = m.t + m.b + row * bars.length;
    const svgEl = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      if (text !== undefined) node.textContent = text;
      return node;
    };
    const top = Math.max(...bars.flatMap((b) => [b.value, ...(b.interval || [])]).filter(isFinite), 0) || 1;
    const X = (x) => m.l + (Math.max(0, x) / top) * (width - m.l - m.r);
    const svg = svgEl("svg", { width, height, class: "chart", role: "img", "aria-label": label });
    bars.forEach((b, i) => {
      const y = m.t + i * row;
      svg.append(svgEl("text", { x: m.l - 6, y: y + row / 2 + 4, "text-anchor": "end" }, b.name));
      svg.append(svgEl("rect", { x: m.l, y: y + 5, width: Math.max(0, X(b.value) - m.l), height: row - 10,
                                 fill: b.best ? "#dd8452" : "#4c72b0", "data-bar": b.name }));
      if (b.interval && b.interval.length === 2) {
        const [lo, hi] = b.interval, mid = y + row / 2;
        svg.append(svgEl("line", { x1: X(lo), x2: X(hi), y1: mid, y2: mid, stroke: "#222" }));
        for (const x of [lo, hi]) svg.append(svgEl("line", { x1: X(x), x2: X(x), y1: mid - 5, y2: mid + 5, stroke: "#222" }));
      }
      svg.append(svgEl("text", { x: X(Math.max(b.value, ...(b.interval || []))) + 4, y: y + row / 2 + 4 }, num(b.value)));
    });
    svg.append(svgEl("text", { x: (width + m.l) / 2, y: height - 8, "text-anchor": "middle" }, label));
    container.replaceChildren(svg);
    return svg;
  }
  return { data, barChart, get: (url) => request("GET", url), post: (url, body) => request("POST", url, body),
           request, el, poll, num, duration, time, status, lineChart, COLORS };
})();
