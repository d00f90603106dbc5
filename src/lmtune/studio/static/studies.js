// The Studies page: every search, learning curve and active-learning experiment, newest first, rebuilt from
// /api/studies every 3 s. Text is set as text only.
"use strict";
(() => {
  const tbody = document.querySelector("#studies tbody");
  function row(s) {
    return studio.el("tr", { "data-study": s.name, "data-kind": s.kind },
      studio.el("td", {}, s.label), studio.el("td", {}, studio.el("a", { href: s.url }, s.name)),
      studio.el("td", { title: s.note || "" }, s.progress, s.live ? studio.el("small", {}, " running") : null),
      studio.el("td", {}, s.best || "—"), studio.el("td", {}, studio.time(s.updated)));
  }
  function render(rows) {
    tbody.replaceChildren(...rows.map(row));
    document.getElementById("empty").hidden = rows.length > 0;
  }
  render((studio.data() || {}).studies || []);
  setInterval(async () => {
    try { render((await studio.get("/api/studies")).studies); } catch (e) { console.warn(e.message); }
  }, 3000);
})();
