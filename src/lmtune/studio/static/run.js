// The Run page: live status, curves and console while the run trains; the confusion matrix's cells and the
// predictions browser. Every value from the run is written as text (studio.el / textContent), never as HTML.
"use strict";
(() => {
  const data = studio.data() || {};
  const base = `/api/runs/${encodeURIComponent(data.name)}`;
  const LIVE = ["running", "queued"], RESUMABLE = ["interrupted", "failed", "cancelled"];
  const $ = (id) => document.getElementById(id);
  let state = (data.status || {}).state, timer = null;

  // --- header: status badge, times, error, actions -------------------------------------------------
  function showStatus(body) {
    state = body.status;
    const badge = $("run-status");
    if (badge) badge.replaceChildren(studio.status(state));
    if ($("run-duration")) $("run-duration").textContent = studio.duration(body.elapsed_s);
    if ($("run-started") && typeof body.started_at === "number") $("run-started").textContent = studio.time(body.started_at);
    const error = $("run-error");
    if (error) { error.textContent = body.error || ""; error.hidden = !body.error; }
    if ($("run-cancel")) $("run-cancel").hidden = !LIVE.includes(state);
    if ($("run-resume")) $("run-resume").hidden = !RESUMABLE.includes(state);
  }
  async function act(what) {
    const message = $("action-message");
    message.hidden = true;
    try {
      await studio.post(`${base}/${what}`);
      await tick();
      follow();
    } catch (e) {
      message.textContent = `${what} failed: ${e.message}`;
      message.hidden = false;
    }
  }
  if ($("run-cancel")) $("run-cancel").addEventListener("click", () => act("cancel"));
  if ($("run-resume")) $("run-resume").addEventListener("click", () => act("resume"));

  // --- training curves ----------------------------------------------------------------------------------
  let drawn = "";
  function drawCurves(c) {
    const key = `${c.train.length}/${c.validation.length}/${c.best_step}`;
    if (key === drawn || !$("curve-loss")) return;
    drawn = key;
    const points = (rows, field) => rows.filter((r) => typeof r[field] === "number").map((r) => [r.step, r[field]]);
    studio.lineChart($("curve-loss"), [{ name: "train loss", points: points(c.train, "loss") },
                                       { name: "validation loss", points: points(c.validation, "loss"), dash: true }],
                     { yLabel: "loss", width: 400 });
    // Learning rates are tiny (2e-4): drawn times a power of ten, so the axis labels stay short.
    const rates = points(c.train, "lr"), top = Math.max(0, ...rates.map((p) => Math.abs(p[1])));
    const power = top > 0 && top < 0.01 ? Math.floor(Math.log10(top)) : 0;
    studio.lineChart($("curve-lr"), [{ name: "learning rate", points: rates.map(([x, y]) => [x, y / 10 ** power]) }],
                     { yLabel: power ? `learning rate (×1e${power})` : "learning rate", width: 380 });
    studio.lineChart($("curve-speed"), [{ name: "tokens/s", points: points(c.train, "tokens_per_s") }],
                     { yLabel: "tokens/s", width: 380 });
    const last = c.train[c.train.length - 1];
    const facts = [];
    if (last) facts.push(`step ${last.step}${c.max_steps ? ` of ${c.max_steps}` : ""}`);
    if (last && typeof last.loss === "number") facts.push(`train loss ${studio.num(last.loss)}`);
    if (c.best_step !== null && c.best_step !== undefined) facts.push(`best validation step ${c.best_step}`);
    if ($("curve-facts")) $("curve-facts").textContent = facts.join(" · ");
  }

  // --- live updates: curves and status every 2 s while the run is queued or running -------------------
  async function tick() {
    let body;
    try {
      body = await studio.get(`${base}/curves`);
    } catch (e) {
      if (e.status === 404 && LIVE.includes(state)) location.reload();  // gone (a run that failed at once)
      throw e;
    }
    const was = state;
    showStatus(body);
    drawCurves(body);
    // Reload once when a queued run gets its directory (task, model...) and when it ends (the results).
    if (body.directory && !data.directory) location.reload();
    if (!LIVE.includes(state)) {
      if (timer !== null) { clearInterval(timer); timer = null; }
      if (LIVE.includes(was)) location.reload();
    }
  }
  function follow() {
    if (timer === null && LIVE.includes(state)) timer = studio.poll(tick, 2000);
    if (consoleTimer === null && !consoleDone) consoleTimer = studio.poll(readConsole, 2000);
  }

  // --- console (runs started from the studio; others have none: 404 hides the section) -----------------
  let consoleOffset = 0, consoleDone = false, consoleTimer = null;
  async function readConsole() {
    const section = $("console-section"), pre = $("console");
    if (!section || consoleDone) return;
    for (let i = 0; i < 20; i++) {  // a finished run's whole log may take a few pages
      let body;
      try {
        body = await studio.get(`${base}/console?offset=${consoleOffset}`);
      } catch (e) {
        if (e.status === 404) section.hidden = true;
        if (!LIVE.includes(state)) stopConsole();
        return;
      }
      section.hidden = false;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      if (body.text) pre.append(document.createTextNode(body.text));
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      consoleOffset = body.offset;
      if (body.done) { consoleDone = true; stopConsole(); return; }
      if (!body.text) return;
    }
  }
  function stopConsole() {
    if (consoleTimer !== null) { clearInterval(consoleTimer); consoleTimer = null; }
  }

  // --- answers: cells shared by the cell examples and the predictions browser -------------------------
  const SHORT = 300;
  function textCell(text, attrs = {}) {
    text = text === null || text === undefined ? "—" : String(text);
    if (text.length <= SHORT) return studio.el("td", attrs, text);
    const shown = studio.el("span", {}, text.slice(0, SHORT) + "…");
    const more = studio.el("button", { type: "button", class: "more" }, "more");
    more.addEventListener("click", () => {
      const open = more.textContent === "more";
      shown.textContent = open ? text : text.slice(0, SHORT) + "…";
      more.textContent = open ? "less" : "more";
    });
    return studio.el("td", attrs, shown, " ", more);
  }
  function answerCell(answer, sure) {
    if (!answer) return studio.el("td", {}, "—");
    const css = answer.correct === true ? "right" : answer.correct === false ? "wrong" : null;
    const said = sure && typeof answer.confidence === "number" ? ` (p ${studio.num(answer.confidence, 2)})` : "";
    return textCell((answer.correct === false ? `✗ ${answer.prediction}` : answer.prediction) + said, { class: css });
  }
  // review: {known} adds the "gold is wrong" column (corrections.js) for a labelled task's test records.
  function answersTable(body, systems, judged, review) {
    const head = studio.el("tr", {}, studio.el("th", {}, "#"), studio.el("th", {}, "input"),
      studio.el("th", {}, "reference"), systems.map((s) => studio.el("th", { class: s === judged ? "judged" : null }, s)),
      review ? studio.el("th", {}, "gold") : null);
    const sure = body.sort === "confidence";
    const rows = body.rows.map((r) => studio.el("tr", { "data-index": r.index }, studio.el("td", { class: "num" }, r.index),
      textCell(r.input), textCell(r.reference), systems.map((s) => answerCell(r.answers[s], sure && s === judged)),
      review ? corrections.cell({ run: data.name, split: "test", index: r.record, gold: r.reference, labels: data.labels,
                                  known: review.known }) : null));
    return [studio.el("thead", {}, head), studio.el("tbody", {}, rows)];
  }
  const query = (params) => Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&");

  // --- confusion matrix: another system's counts; a cell's examples ------------------------------------
  function confusionTable(c) {
    const head = studio.el("tr", {}, studio.el("th", {}, "gold \\ predicted"), c.predicted_labels.map((p) => studio.el("th", {}, p)));
    const rows = c.labels.map((gold, i) => studio.el("tr", {}, studio.el("th", {}, gold), c.predicted_labels.map((p, j) => {
      const n = c.matrix[i][j], css = p === gold ? "num diagonal" : "num";
      return studio.el("td", { class: css }, n ? studio.el("button", { type: "button", "data-gold": gold, "data-predicted": p }, n) : "0");
    })));
    return studio.el("table", { class: "confusion" }, studio.el("thead", {}, head), studio.el("tbody", {}, rows));
  }
  async function showCell(gold, predicted) {
    const system = $("confusion-system").value, box = $("cell-examples");
    box.replaceChildren(studio.el("p", { class: "meta" }, "loading…"));
    try {
      const body = await studio.get(`${base}/predictions?${query({ system, gold, predicted, limit: 200 })}`);
      const others = body.systems.filter((s) => s !== system);
      const shown = body.rows.length < body.total ? ` (first ${body.rows.length})` : "";
      box.replaceChildren(studio.el("h3", {}, `${body.total} examples${shown}: gold ${gold}, ${system} predicted ${predicted}`),
        studio.el("table", { class: "examples" }, answersTable(body, [system, ...others], system)));
    } catch (e) {
      box.replaceChildren(studio.el("p", { class: "warning" }, e.message));
    }
  }
  if ($("confusion-table")) {
    $("confusion-table").addEventListener("click", (event) => {
      const cell = event.target.closest("button[data-gold]");
      if (cell) showCell(cell.dataset.gold, cell.dataset.predicted);
    });
    $("confusion-system").addEventListener("change", async () => {
      try {
        const c = await studio.get(`${base}/confusion?${query({ system: $("confusion-system").value })}`);
        $("confusion-table").replaceChildren(confusionTable(c));
        $("cell-examples").replaceChildren();
      } catch (e) {
        $("cell-examples").replaceChildren(studio.el("p", { class: "warning" }, e.message));
      }
    });
  }

  // --- predictions browser --------------------------------------------------------------------------------
  const browse = { system: data.system, offset: 0, limit: 50, seq: 0 };
  const review = data.labelled && data.labels ? { known: new Map() } : null;
  function renderPredictions(body) {
    const systems = body.systems;
    $("pred-table").replaceChildren(...answersTable(body, systems, body.system, review));
    const end = body.offset + body.rows.length;
    $("pred-count").textContent = body.total ? `${body.offset + 1}–${end} of ${body.total}` : "0 of 0";
    $("pred-prev").disabled = body.offset <= 0;
    $("pred-next").disabled = end >= body.total;
    $("pred-note").textContent = body.note || "";
    $("pred-note").hidden = !body.note;
  }
  async function loadPredictions() {
    const seq = ++browse.seq;
    const params = { system: $("pred-system").value, correct: $("pred-correct").value,
                     disagree: $("pred-disagree").checked ? 1 : 0, q: $("pred-q").value.trim(), sort: $("pred-sort").value,
                     offset: browse.offset, limit: browse.limit };
    try {
      const body = await studio.get(`${base}/predictions?${query(params)}`);
      if (seq === browse.seq) renderPredictions(body);
    } catch (e) {
      if (seq === browse.seq) { $("pred-note").textContent = e.message; $("pred-note").hidden = false; }
    }
  }
  if ($("pred-table") && data.predictions) {
    $("pred-system").replaceChildren(...data.systems.map((s) => studio.el("option", { value: s, selected: s === data.system }, s)));
    const again = () => { browse.offset = 0; loadPredictions(); };
    ["pred-system", "pred-correct", "pred-disagree", "pred-sort"].forEach((id) => $(id).addEventListener("change", again));
    let typing = null;
    $("pred-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(again, 300); });
    $("pred-prev").addEventListener("click", () => { browse.offset = Math.max(0, browse.offset - browse.limit); loadPredictions(); });
    $("pred-next").addEventListener("click", () => { browse.offset += browse.limit; loadPredictions(); });
    renderPredictions(data.predictions);
    // "Review disagreements" / "Review confident errors": the browser's filters set in one click (?review=).
    const presets = {
      "disagreements": () => { $("pred-disagree").checked = true; $("pred-correct").value = "all"; $("pred-sort").value = "index"; },
      "confident-errors": () => { $("pred-system").value = data.system; $("pred-correct").value = "incorrect";
                                  $("pred-disagree").checked = false; $("pred-sort").value = "confidence"; },
    };
    const preset = (kind) => { if (!presets[kind]) return; presets[kind](); again(); $("predictions").scrollIntoView(); };
    document.querySelectorAll(".review-links a[href^='?review=']").forEach((link) => link.addEventListener("click", (event) => {
      event.preventDefault();
      const kind = new URLSearchParams(link.getAttribute("href").split("#")[0]).get("review");
      history.replaceState(null, "", `?review=${encodeURIComponent(kind)}#predictions`);
      preset(kind);
    }));
    preset(new URLSearchParams(location.search).get("review"));
    if (review) {
      corrections.load(data.name, "test", review.known, $("pred-table"))
        .catch((e) => { $("pred-note").textContent = e.message; $("pred-note").hidden = false; });
    }
  }

  // --- first paint from the page data, then live -----------------------------------------------------------
  if (data.curves) drawCurves(data.curves);
  if (data.verdict && $("verdict-chart")) {
    studio.barChart($("verdict-chart"), data.verdict.bars, { label: `${data.verdict.metric} per system, 95% intervals` });
  }
  if (data.status) showStatus({ status: state, ...data.status });
  follow();
})();
