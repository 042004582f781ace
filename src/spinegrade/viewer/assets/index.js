// spinegrade index: click a column header to sort the studies by it (again to reverse).
(function () {
  "use strict";
  for (const table of document.querySelectorAll("table.sortable")) {
    const body = table.tBodies[0];
    table.querySelectorAll("th").forEach((th, column) => {
      th.addEventListener("click", () => {
        const down = th.dataset.order !== "desc";
        table.querySelectorAll("th").forEach((h) => delete h.dataset.order);
        th.dataset.order = down ? "desc" : "asc";
        const key = (row) => {
          const text = row.cells[column].dataset.value ?? row.cells[column].textContent;
          const number = Number(text);
          return text !== "" && !Number.isNaN(number) ? number : text;
        };
        const rows = Array.from(body.rows).sort((a, b) => {
          const ka = key(a), kb = key(b);
          const order = typeof ka === "number" && typeof kb === "number" ? ka - kb : String(ka).localeCompare(String(kb));
          return down ? -order : order;
        });
        body.append(...rows);
      });
    });
  }
})();
