// "Gold is wrong": the control each record of a labelled task gets on the Run page's predictions browser and on a
// run's review page. It posts only the record's split and line (and the right label, a reason) to
// /api/runs/<run>/corrections: the server reads the record's text and gold label from the run itself. Text is
// written with textContent only (studio.el), never as HTML.
"use strict";
const corrections = (() => {
  const api = (run) => `/api/runs/${encodeURIComponent(run)}/corrections`;
  // Fills `known` (a Map from a record's line to its latest correction) with the run's live corrections of one
  // split, then shows them in the cells under `container` (leaving a form someone has open as it is).
  async function load(run, split, known, container) {
    const body = await studio.get(`${api(run)}?split=${encodeURIComponent(split)}`);
    for (const c of body.corrections) if (!known.has(c.record)) known.set(c.record, c);  // newest first
    container.querySelectorAll("td.gold-review").forEach((td) => td.refresh());
  }
  function made(c) {
    return studio.el("span", { class: "corrected", title: c.reason || null },
      "gold → ", studio.el("strong", {}, c.corrected), studio.el("small", {}, ` by ${c.annotator}`));
  }
  // A <td> for record `index` of `split` whose gold label is `gold`: the correction made, or a "gold is wrong"
  // button that opens a form (the right label, an optional reason). `known` is load()'s Map, updated on a save.
  function cell({ run, split, index, gold, labels, known }) {
    const td = studio.el("td", { class: "gold-review" });
    if (index === null || index === undefined) return studio.el("td", { title: "this row's test record cannot be told" }, "—");
    let editing = false;
    td.refresh = () => { if (!editing) show(); };
    function show() {
      editing = false;
      const c = known.get(index);
      td.replaceChildren(c ? made(c) : studio.el("button", { type: "button", class: "gold-wrong", onclick: form }, "gold is wrong"));
    }
    function form() {
      editing = true;
      const choice = studio.el("select", { class: "gold-choice", "aria-label": "the right label" },
        labels.filter((label) => label !== gold).map((label) => studio.el("option", { value: label }, label)));
      const reason = studio.el("input", { type: "text", class: "gold-reason", placeholder: "reason (optional)", maxlength: 1000 });
      const message = studio.el("span", { class: "warning", hidden: true });
      const save = studio.el("button", { type: "button", class: "primary gold-save" }, "Save");
      save.addEventListener("click", async () => {
        save.disabled = true;
        try {
          known.set(index, await studio.post(api(run), { split, index, corrected: choice.value, reason: reason.value }));
          show();
        } catch (e) {
          message.textContent = e.message;
          message.hidden = false;
          save.disabled = false;
        }
      });
      td.replaceChildren(studio.el("div", { class: "gold-form" }, studio.el("label", {}, "right label ", choice), reason,
        save, studio.el("button", { type: "button", onclick: show }, "Cancel"), message));
      choice.focus();
    }
    show();
    return td;
  }
  return { load, cell };
})();
