// Meshward dashboard: the graph's detail panel and the live tap. Plain JavaScript, no library,
// no request to any other host. Every value goes into the page as text (textContent), never HTML.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function showDetail(title, fields) {
  const panel = document.getElementById("detail");
  if (!panel) return;
  panel.replaceChildren(el("h2", title));
  const list = el("dl");
  for (const [key, value] of Object.entries(fields)) {
    let shown = value;
    if (Array.isArray(value)) shown = value.length ? value.join(", ") : "-";
    else if (value && typeof value === "object") {
      const parts = Object.entries(value).map(([k, v]) => k + ": " + v);
      shown = parts.length ? parts.join(", ") : "-";
    } else if (value === null || value === "") shown = "-";
    list.append(el("dt", key.replace(/_/g, " ")), el("dd", shown));
  }
  panel.append(list);
}

function initGraph() {
  const block = document.getElementById("graph-data");
  if (!block) return;
  const data = JSON.parse(block.textContent);
  const select = (selected) => {
    for (const node of document.querySelectorAll(".selected")) node.classList.remove("selected");
    for (const node of selected) node.classList.add("selected");
  };
  for (const node of document.querySelectorAll("[data-node]")) {
    node.addEventListener("click", () => {
      const ref = node.dataset.node;
      select(document.querySelectorAll(`[data-node="${CSS.escape(ref)}"]`));
      showDetail(ref, data.nodes[ref] || {});
    });
  }
  for (const edge of document.querySelectorAll("[data-edge]")) {
    edge.addEventListener("click", () => {
      const key = edge.dataset.edge;
      select(document.querySelectorAll(`[data-edge="${CSS.escape(key)}"]`));
      showDetail(key, data.edges[key] || {});
    });
  }
}

const TAP_ROWS = 500;

function tapRow(e) {
  const row = el("tr");
  row.dataset.decision = e.decision;
  row.dataset.status = e.status;
  const time = new Date(e.time * 1000).toISOString().slice(11, 23);
  const tokens = e.tokens && (e.tokens.input || e.tokens.output) ? `${e.tokens.input}+${e.tokens.output}` : "";
  const cells = [time, e.source, e.destination_service, e.method, e.path, e.model || "", e.operation,
    e.status, e.decision, e.policy || "", tokens, (e.dlp || []).join(", "), `${e.duration_ms} ms`];
  cells.forEach((value, i) => {
    const cell = el("td", value);
    if (i === 8) cell.className = "decision " + e.decision;
    row.append(cell);
  });
  if (!e.mtls) row.classList.add("plaintext");
  return row;
}

function initTap() {
  const table = document.getElementById("tap");
  if (!table) return;
  const body = table.querySelector("tbody");
  const state = document.getElementById("tap-state");
  const source = new EventSource("/api/tap" + window.location.search);
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    body.prepend(tapRow(JSON.parse(message.data)));
    while (body.rows.length > TAP_ROWS) body.deleteRow(body.rows.length - 1);
  };
  source.addEventListener("dropped", (message) => {
    state.textContent = `live (${message.data} events dropped: this page read too slowly)`;
  });
  window.addEventListener("pagehide", () => source.close());
}

document.addEventListener("DOMContentLoaded", () => {
  initGraph();
  initTap();
});
