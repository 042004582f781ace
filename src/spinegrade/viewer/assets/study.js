// spinegrade study page: slice scrollers (wheel, arrow keys, slider) with the located and the labelled
// points on their slices and the axial slice lines on the sagittal views; a target row jumps to its point.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("study-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const viewers = {};
  let highlight = null;

  function add(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    parent.appendChild(node);
    return node;
  }

  function draw(v) {
    const s = v.series;
    v.svg.replaceChildren();
    const r = Math.max(s.rows, s.cols) / 70;
    for (const [other, perSlice] of Object.entries(s.lines)) {
      const o = viewers[other];
      if (!o) continue;
      for (const [i, x0, y0, x1, y1] of perSlice[v.index]) {
        const line = add("line", { x1: x0, y1: y0, x2: x1, y2: y1, class: i === o.index ? "plane current" : "plane" }, v.svg);
        add("title", {}, line).textContent = `${o.series.type} slice ${i + 1} (click to show it)`;
        line.addEventListener("click", () => show(o, i));
      }
    }
    for (const p of s.points) {
      if (p.slice !== v.index) continue;
      const cls = `point ${p.kind} grade${p.grade}` + (p.target === highlight ? " hl" : "");
      const g = add("g", { class: cls, "data-target": p.target }, v.svg);
      const size = { "font-size": r * 1.7 };
      if (p.kind === "truth") {
        // Ring, label to the left and below: the located cross keeps the right-hand side.
        add("circle", { cx: p.x, cy: p.y, r: r * 1.4 }, g);
        add("text", { x: p.x - r * 1.6, y: p.y + r * 1.9, "text-anchor": "end", ...size }, g).textContent = p.label;
      } else {
        add("path", { d: `M${p.x - r} ${p.y}h${2 * r}M${p.x} ${p.y - r}v${2 * r}` }, g);
        add("text", { x: p.x + r * 1.3, y: p.y - r * 0.5, ...size }, g).textContent = p.label;
      }
      add("title", {}, g).textContent = p.title;
    }
  }

  function show(v, index) {
    const n = v.series.slices.length;
    v.index = Math.max(0, Math.min(n - 1, index));
    v.img.src = v.series.slices[v.index];
    v.range.value = String(v.index);
    v.label.textContent = `slice ${v.index + 1} / ${n} · instance ${v.series.instances[v.index]}`;
    v.root.dataset.slice = String(v.index);
    draw(v);
    for (const w of Object.values(viewers)) if (w !== v && w.series.lines[v.series.id]) draw(w);
  }

  const STEPS = { ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -5, PageDown: 5 };
  for (const s of data.series) {
    const root = document.getElementById("viewer-" + s.id);
    const v = {
      series: s, root, index: s.start,
      img: root.querySelector("img"), svg: root.querySelector("svg"),
      range: root.querySelector("input"), label: root.querySelector(".slice-label"),
    };
    viewers[s.id] = v;
    v.range.addEventListener("input", () => show(v, Number(v.range.value)));
    root.querySelector(".frame").addEventListener("wheel", (e) => {
      e.preventDefault();
      show(v, v.index + Math.sign(e.deltaY));
    }, { passive: false });
    root.addEventListener("keydown", (e) => {
      if (e.target === v.range || !(e.key in STEPS)) return; // the slider moves itself
      e.preventDefault();
      show(v, v.index + STEPS[e.key]);
    });
    root.addEventListener("mouseenter", () => root.focus({ preventScroll: true }));
  }
  for (const v of Object.values(viewers)) show(v, v.index);

  for (const row of document.querySelectorAll("tr[data-series]")) {
    row.addEventListener("click", () => {
      const v = viewers[row.dataset.series];
      if (!v) return;
      highlight = row.dataset.target;
      for (const other of document.querySelectorAll("tr.selected")) other.classList.remove("selected");
      row.classList.add("selected");
      show(v, Number(row.dataset.slice));
      v.root.scrollIntoView({ block: "nearest", behavior: "smooth" });
    });
  }
})();
