// The labelling page: one record at a time, answered with the keyboard. 1-9 pick a label, Enter accepts the
// pre-label, S skips, U undoes, F flags (then a digit flags with that label, F or Enter without one; Esc cancels);
// on a generation queue the text box takes the letters and Ctrl+Enter submits it. The next record is shown only
// once the server has stored the answer (its reply carries the next record); an error stays on the status line
// and the record stays. Text goes in with textContent only.
"use strict";
(() => {
  const page = studio.data();
  const $ = (id) => document.getElementById(id);
  const base = `/api/label/${encodeURIComponent(page.queue)}`;
  const answerText = $("answer-text");
  let current = page.current.record;
  let busy = false;
  let flagging = false;

  function status(message, error) {
    $("status").textContent = message || "";
    $("status").classList.toggle("error", Boolean(error));
  }
  function showProgress(p) {
    const bar = $("progress");
    bar.max = Math.max(1, p.needed);
    bar.value = p.answered;
    $("progress-text").textContent =
      `you: ${p.mine} answered · queue: ${p.answered} of ${p.needed} answers on ${p.total} records`;
  }
  function show(result) {
    current = result.record;
    flagging = false;
    showProgress(result.progress);
    $("record").hidden = !current;
    $("done").hidden = Boolean(current);
    if (!current) { delete $("record").dataset.index; return; }
    $("record").dataset.index = current.index;
    $("record-index").textContent = `#${current.index}`;
    $("record-text").textContent = current.text;
    const pre = $("prelabel");
    pre.replaceChildren();
    if (current.prelabel !== null && !page.generation) {
      const confidence = typeof current.confidence === "number" ? ` (confidence ${Math.round(current.confidence * 100)}%)` : "";
      pre.append("Model suggests ", studio.el("b", {}, current.prelabel), confidence, " · Enter accepts it");
    } else if (page.generation && current.prelabel !== null) {
      pre.textContent = "The box holds the model's draft: edit it, then Ctrl+Enter.";
    }
    for (const button of document.querySelectorAll("#choices button")) {
      button.classList.toggle("suggested", button.dataset.label === current.prelabel);
    }
    if (answerText) {
      answerText.value = current.prelabel || "";
      answerText.dataset.draft = answerText.value;
      answerText.focus();
    }
    $("note").value = "";
  }
  async function send(url, body, done) {
    if (busy) return;
    busy = true;
    status("saving…");
    try {
      const result = await studio.post(url, body);
      show(result);
      status(done(result));
    } catch (e) {
      status(`not saved: ${e.message}`, true);
    } finally {
      busy = false;
    }
  }
  function answer(kind, label) {
    if (!current) return;
    const body = { index: current.index, kind };
    if (label !== undefined && label !== null) body[page.generation ? "text" : "label"] = label;
    const note = $("note").value.trim();
    if (kind === "flag" && note) body.note = note;
    const what = kind === "skip" ? "skipped" : kind === "flag" ? "flagged" : `saved ${page.generation ? "text" : label}`;
    send(`${base}/answer`, body, () => `#${body.index} ${what}`);
  }
  function undo() {
    send(`${base}/undo`, undefined, (r) => `undid your answer to #${r.undone.index}`);
  }
  function accept() {
    if (!current) return;
    if (page.generation) { answer("label", answerText.value); return; }
    if (current.prelabel && page.labels.includes(current.prelabel)) answer("label", current.prelabel);
    else status("this record has no pre-label to accept: press 1-9", true);
  }
  function flag() {
    if (page.generation) {  // the current choice: the text, when the annotator changed the draft
      const edited = answerText.value.trim() && answerText.value !== answerText.dataset.draft;
      answer("flag", edited ? answerText.value : null);
      return;
    }
    flagging = true;
    status("flagging: press 1-9 to flag with that label, F or Enter to flag without one, Esc to cancel");
  }

  function onKey(e) {
    const typing = e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement;
    if (typing) {
      if (e.target === answerText && e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); accept(); }
      else if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || busy) return;
    const key = e.key.toLowerCase();
    const digit = /^[1-9]$/.test(key) ? page.labels && page.labels[Number(key) - 1] : undefined;
    let handled = true;
    if (flagging) {
      if (digit) answer("flag", digit);
      else if (key === "f" || key === "enter") answer("flag", null);
      else if (key === "escape") { flagging = false; status("flag cancelled"); }
      else handled = false;
    } else if (digit) answer("label", digit);
    else if (key === "enter") accept();
    else if (key === "s") answer("skip");
    else if (key === "u") undo();
    else if (key === "f") flag();
    else handled = false;
    if (handled) e.preventDefault();
  }

  document.addEventListener("keydown", onKey);
  for (const button of document.querySelectorAll("#choices button")) {
    button.addEventListener("click", () => { button.blur(); answer("label", button.dataset.label); });
  }
  const click = (id, fn) => { const b = $(id); if (b) b.addEventListener("click", () => { b.blur(); fn(); }); };
  click("accept", accept);
  click("submit", accept);
  click("skip", () => answer("skip"));
  click("undo", undo);
  click("flag", flag);
  show(page.current);
})();
