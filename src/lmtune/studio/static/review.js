// The review pages: every correction with its withdraw button (/review), and a run's records of one split with the
// "gold is wrong" control (/review/<run>?split=train, corrections.js). Text is written with textContent only.
"use strict";
(() => {
  const data = studio.data() || {};
  const $ = (id) => document.getElementById(id);

  // --- /review: filter by run, withdraw ------------------------------------------------------------------------
  if (data.page === "corrections") {
    $("review-run").addEventListener("change", () => {
      const run = $("review-run").value;
      location.search = run ? `?run=${encodeURIComponent(run)}` : "";
    });
    const table = $("corrections");
    if (table) {
      table.addEventListener("click", async (event) => {
        const button = event.target.closest("button[data-withdraw]");
        if (!button) return;
        button.disabled = true;
        try {
          const c = await studio.post(`/api/review/corrections/${encodeURIComponent(button.dataset.withdraw)}/withdraw`);
          button.closest("tr").classList.add("withdrawn");
          button.replaceWith(studio.el("span", { class: "meta" }, `withdrawn by ${c.withdrawn_by}`));
        } catch (e) {
          button.disabled = false;
          $("review-message").textContent = e.message;
          $("review-message").hidden = false;
        }
      });
    }
  }

  // --- /review/<run>?split=: the split's records, paged and searched ------------------------------------------
  if (data.page === "records") {
    const base = `/api/runs/${encodeURIComponent(data.name)}/records`;
    const browse = { offset: 0, limit: 50, seq: 0, known: new Map() };
    function render(body) {
      const head = studio.el("tr", {}, studio.el("th", {}, "#"), studio.el("th", {}, "text"), studio.el("th", {}, "gold"),
        studio.el("th", {}, "review"));
      const rows = body.rows.map((r) => studio.el("tr", { "data-index": r.index }, studio.el("td", { class: "num" }, r.index),
        studio.el("td", {}, r.text), studio.el("td", {}, r.label),
        corrections.cell({ run: data.name, split: data.split, index: r.index, gold: r.label, labels: data.labels,
                           known: browse.known })));
      $("records").replaceChildren(studio.el("thead", {}, head), studio.el("tbody", {}, rows));
      const end = body.offset + body.rows.length;
      $("records-count").textContent = body.total ? `${body.offset + 1}–${end} of ${body.total}` : "0 of 0";
      $("records-prev").disabled = body.offset <= 0;
      $("records-next").disabled = end >= body.total;
    }
    async function load() {
      const seq = ++browse.seq;
      const q = encodeURIComponent($("records-q").value.trim());
      const body = await studio.get(`${base}?split=${encodeURIComponent(data.split)}&q=${q}&offset=${browse.offset}&limit=${browse.limit}`);
      if (seq === browse.seq) render(body);
    }
    let typing = null;
    $("records-q").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { browse.offset = 0; load(); }, 300);
    });
    $("records-prev").addEventListener("click", () => { browse.offset = Math.max(0, browse.offset - browse.limit); load(); });
    $("records-next").addEventListener("click", () => { browse.offset += browse.limit; load(); });
    render(data.records);
    corrections.load(data.name, data.split, browse.known, $("records")).catch((e) => { $("records-count").textContent = e.message; });
  }
})();
