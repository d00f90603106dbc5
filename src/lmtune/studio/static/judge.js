// The Judge pages: the new-round form, blind A/B judging by keyboard or buttons, the results' report button.
// Text from runs and annotators is written with textContent only (studio.el makes text nodes).
"use strict";
(() => {
  const data = studio.data() || {};
  const enc = encodeURIComponent;
  const show = (node, text) => { node.textContent = text; node.hidden = !text; };

  function indexView() {
    const form = document.getElementById("round-form");
    if (!form) return;
    const run = document.getElementById("round-run"), a = document.getElementById("round-a");
    const b = document.getElementById("round-b"), message = document.getElementById("round-message");
    const systemsOf = (name) => ((data.runs || []).find((r) => r.name === name) || { systems: [] }).systems;
    function fill() {
      const systems = systemsOf(run.value);
      for (const select of [a, b]) select.replaceChildren(...systems.map((s) => studio.el("option", { value: s }, s)));
      const tuned = systems.find((s) => s.startsWith("finetuned"));  // the usual question: tuned vs a baseline
      b.value = tuned || systems[1] || systems[0];
      a.value = systems.find((s) => s !== b.value) || systems[0];
    }
    run.addEventListener("change", fill);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      show(message, "");
      try {
        const created = await studio.post("/api/judge/rounds", { run: run.value, system_a: a.value, system_b: b.value });
        location.href = created.url;
      } catch (e) { show(message, e.message); }
    });
    fill();
  }

  function judgeView() {
    const url = `/api/judge/${enc(data.round)}/answer`;
    const reason = document.getElementById("judge-reason"), error = document.getElementById("judge-error");
    const buttons = [...document.querySelectorAll("#judge-item button[data-choice]")];
    let item = data.item, progress = data.progress, busy = false;
    const KEYS = { a: "A", 1: "A", b: "B", 2: "B", t: "tie", 0: "tie", s: "skip" };

    function render() {
      const box = document.getElementById("judge-item");
      document.getElementById("judge-progress").textContent = `${progress.done} of ${progress.total} judged`;
      box.hidden = !item;
      document.getElementById("judge-done").hidden = !!item;
      if (!item) return;
      box.dataset.index = String(item.index);
      document.getElementById("judge-input").textContent = item.input;
      document.getElementById("judge-reference").textContent = item.reference ?? "";
      document.getElementById("judge-reference-box").hidden = !item.reference;
      document.getElementById("judge-a").textContent = item.A;
      document.getElementById("judge-b").textContent = item.B;
      reason.value = "";
    }
    async function answer(choice) {
      if (busy || !item) return;
      busy = true;
      buttons.forEach((b) => { b.disabled = true; });
      try {  // the next item only after the server has committed this answer
        const reply = await studio.post(url, { index: item.index, choice, reason: reason.value });
        item = reply.item; progress = reply.progress;
        show(error, "");
        if (document.activeElement === reason) reason.blur();
        render();
      } catch (e) {
        show(error, `not saved: ${e.message}`);
      } finally {
        busy = false;
        buttons.forEach((b) => { b.disabled = false; });
      }
    }
    buttons.forEach((b) => b.addEventListener("click", () => answer(b.dataset.choice)));
    reason.addEventListener("keydown", (event) => { if (event.key === "Escape") reason.blur(); });
    document.addEventListener("keydown", (event) => {
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      if (event.target instanceof Element && event.target.closest("input, textarea, select, [contenteditable]")) return;
      const choice = KEYS[event.key.toLowerCase()];
      if (!choice) return;
      event.preventDefault();
      answer(choice);
    });
    render();
  }

  function resultsView() {
    const button = document.getElementById("update-report"), message = document.getElementById("report-message");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const reply = await studio.post(`/api/judge/${enc(data.round)}/report`);
        show(message, `report.html updated: ${reply.report}`);
      } catch (e) { show(message, `not updated: ${e.message}`); } finally { button.disabled = false; }
    });
  }

  ({ index: indexView, judge: judgeView, results: resultsView }[data.view] || (() => {}))();
})();
