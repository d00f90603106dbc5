// The Compare page: every run's train (solid) and validation (dashed) loss on one chart, polled every 2 s
// while a run trains; on the picker, the Compare button is enabled for 2 to 8 runs.
"use strict";
(() => {
  const MAX_RUNS = 8;
  const page = studio.data() || {};
  const chart = document.getElementById("compare-loss");
  const live = (payload) => payload.runs.some((r) => r.status === "running" || r.status === "queued");

  function draw(payload) {
    const series = [];
    payload.runs.forEach((r, i) => {
      const color = studio.COLORS[i % studio.COLORS.length];
      series.push({ name: `${r.name} train`, points: r.train, color });
      series.push({ name: `${r.name} validation`, points: r.validation, color, dash: true });
    });
    studio.lineChart(chart, series, { xLabel: "step", yLabel: "loss", width: 900, height: 320 });
    for (const r of payload.runs) {
      document.querySelectorAll("td[data-status-of]").forEach((cell) => {
        if (cell.dataset.statusOf === r.name) cell.replaceChildren(studio.status(r.status));
      });
    }
  }

  if (chart && page.curves) {
    draw(page.curves);
    if (live(page.curves)) {
      const query = page.runs.map((n) => `run=${encodeURIComponent(n)}`).join("&");
      const timer = studio.poll(async () => {
        const payload = await studio.get(`/api/compare?${query}`);
        draw(payload);
        if (!live(payload)) clearInterval(timer);
      }, 2000);
    }
  }

  const picker = document.getElementById("compare-picker");
  if (picker) {
    const button = document.getElementById("compare-button");
    const boxes = [...picker.querySelectorAll("input[name=run]")];
    const update = () => {
      const n = boxes.filter((b) => b.checked).length;
      button.disabled = n < 2 || n > MAX_RUNS;
      document.getElementById("pick-hint").textContent =
        n > MAX_RUNS ? `At most ${MAX_RUNS} runs at once (${n} selected).` : `Pick two to ${MAX_RUNS} runs (${n} selected).`;
    };
    boxes.forEach((b) => b.addEventListener("change", update));
    update();
  }
})();
