// The owner's forms: create a labelling queue (then reload the list), add an annotator, whose link (with its
// token) is shown once, and, on a queue's overview, retrain (then open the Compare page on old vs new). Text
// goes in with textContent only.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const queueForm = $("new-queue");
  const annotatorForm = $("new-annotator");

  async function createQueue(e) {
    e.preventDefault();
    const form = new FormData(queueForm);
    const body = { name: form.get("name").trim(), pool: form.get("pool").trim(),
                   guidelines: form.get("guidelines"), overlap: Number(form.get("overlap") || 0) };
    if (form.get("recipe")) body.recipe = form.get("recipe");
    if (form.get("task")) body.task = form.get("task");
    const labels = form.get("labels").split(",").map((s) => s.trim()).filter(Boolean);
    if (labels.length) body.labels = labels;
    $("queue-status").textContent = "creating…";
    try {
      const result = await studio.post("/api/label/queues", body);
      $("queue-status").textContent = `created ${result.queue.name} (${result.queue.progress.total} records)`;
      location.reload();
    } catch (err) {
      $("queue-status").textContent = `not created: ${err.message}`;
    }
  }

  async function addAnnotator(e) {
    e.preventDefault();
    const name = new FormData(annotatorForm).get("name").trim();
    $("annotator-status").textContent = "adding…";
    try {
      const result = await studio.post("/api/annotators", { name });
      $("annotator-status").textContent = `added ${result.name}`;
      $("annotators").append(studio.el("li", {}, result.name));
      const empty = $("no-annotators");
      if (empty) empty.hidden = true;
      $("link-name").textContent = result.name;
      $("link").textContent = result.link;
      $("annotator-link").hidden = false;
      annotatorForm.reset();
    } catch (err) {
      $("annotator-status").textContent = `not added: ${err.message}`;
    }
  }

  async function retrain(e) {
    e.preventDefault();
    const form = $("retrain");
    $("retrain-status").textContent = "starting…";
    try {
      const result = await studio.post(`/api/label/${encodeURIComponent(form.dataset.queue)}/retrain`,
                                       { min_new: Number(new FormData(form).get("min_new") || 1) });
      $("retrain-status").textContent = `started ${result.run} with ${result.labels} labelled records`;
      location.href = result.url;
    } catch (err) {
      $("retrain-status").textContent = `not started: ${err.message}`;
    }
  }

  if ($("retrain")) $("retrain").addEventListener("submit", retrain);
  if (queueForm) queueForm.addEventListener("submit", createQueue);
  if (annotatorForm) annotatorForm.addEventListener("submit", addAnnotator);
})();
