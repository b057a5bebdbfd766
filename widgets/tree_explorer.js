// TreeExplorer: a live view of a search tree, drawn on a canvas so that thousands of nodes stay fluid.
// Model traits: snapshot (all events so far), height. Custom messages from Python: {type: "events" | "reset", events}.
// To Python: {type: "sync"} on first render, {type: "hover" | "click", node}.

const STATUS_COLORS = { pruned: "#b8b8b8", selected: "#d4a017" };

function scoreColor(s) {            // PRM score 0 → red, 1 → green; unscored → slate
  if (s === null || s === undefined) return "#7a8699";
  const h = Math.max(0, Math.min(1, s)) * 120;
  return `hsl(${h}, 70%, 45%)`;
}
function clusterColor(c) { return `hsl(${(c * 137.5) % 360}, 65%, 55%)`; }

// Replay events into a tree state; `upto` events only (the replay slider).
function buildState(events, upto) {
  const nodes = new Map(), problems = new Set();
  for (let i = 0; i < Math.min(upto, events.length); i++) {
    const e = events[i], n = nodes.get(e.node);
    switch (e.t) {
      case "add":
        if (nodes.has(e.node)) break;
        nodes.set(e.node, { id: e.node, parent: e.parent, problem: e.problem ?? 0, depth: e.depth ?? 0,
                            text: e.text ?? "", tokens: e.tokens ?? 0, score: null, children: [], status: "live" });
        if (e.parent !== null && e.parent !== undefined && nodes.has(e.parent)) nodes.get(e.parent).children.push(e.node);
        problems.add(e.problem ?? 0); break;
      case "score": if (n) n.score = e.score; break;
      case "keep": if (n) { n.kept = e.children; } break;
      case "prune": if (n) n.status = "pruned"; break;
      case "finish": if (n) { n.finished = true; n.answer = e.answer; n.final = e.score; } break;
      case "answer": if (nodes.has(e.node)) nodes.get(e.node).status = "selected"; break;
      case "free": if (n) n.freed = true; break;
      case "select":
        if (e.clusters) for (const [id, c] of Object.entries(e.clusters)) { const m = nodes.get(+id); if (m) m.cluster = c; }
        break;
      case "backup": for (let m = nodes.get(e.node); m; m = nodes.get(m.parent)) m.visits = (m.visits ?? 0) + 1; break;
    }
  }
  return { nodes, problems: [...problems].sort((a, b) => a - b) };
}

// Tidy layout: leaves on consecutive columns (post-order), a parent centred over its children, depth on rows.
function layout(state, problem) {
  const pos = new Map(); let col = 0, maxDepth = 0;
  const roots = [...state.nodes.values()].filter(n => n.problem === problem && (n.parent === null || n.parent === undefined));
  const stack = roots.slice().reverse().map(n => [n, false]);
  while (stack.length) {                                  // iterative post-order: deep trees do not overflow
    const [n, done] = stack.pop();
    if (!done) {
      stack.push([n, true]);
      for (let i = n.children.length - 1; i >= 0; i--) stack.push([state.nodes.get(n.children[i]), false]);
      continue;
    }
    maxDepth = Math.max(maxDepth, n.depth);
    if (!n.children.length) pos.set(n.id, { x: col++, y: n.depth });
    else {
      const xs = n.children.map(c => pos.get(c).x);
      pos.set(n.id, { x: (Math.min(...xs) + Math.max(...xs)) / 2, y: n.depth });
    }
  }
  return { pos, cols: Math.max(1, col), rows: maxDepth + 1 };
}

function pathOf(state, id) {
  const out = [];
  for (let n = state.nodes.get(id); n; n = state.nodes.get(n.parent)) out.push(n);
  return out.reverse();
}
function leavesBelow(state, n) {
  if (!n.children.length) return n.status === "pruned" ? 0 : 1;
  let k = 0; for (const c of n.children) k += leavesBelow(state, state.nodes.get(c)); return k;
}

function render({ model, el }) {
  el.classList.add("wb-tree");
  el.innerHTML = `
    <div class="wb-bar">
      <label>problem <select class="wb-problem"></select></label>
      <label>colour <select class="wb-colour"><option value="score">PRM score</option><option value="cluster">ETS cluster</option></select></label>
      <label class="wb-replay">step <input type="range" class="wb-slider" min="0" max="0" value="0"><span class="wb-step"></span></label>
      <label><input type="checkbox" class="wb-follow" checked> live</label>
      <span class="wb-count"></span>
    </div>
    <div class="wb-main"><canvas class="wb-canvas"></canvas><div class="wb-detail">Click a node to see its path, scores and KV blocks.</div></div>
    <div class="wb-legend"><span style="color:hsl(0,70%,45%)">●</span> score 0 <span style="color:hsl(120,70%,45%)">●</span> score 1
      <span style="color:#b8b8b8">●</span> pruned <span style="color:#d4a017">◆</span> chosen answer ■ finished · size ∝ √tokens</div>`;
  const $ = s => el.querySelector(s);
  const canvas = $(".wb-canvas"), ctx = canvas.getContext("2d"), detail = $(".wb-detail");
  let events = (model.get("snapshot") || []).slice(), upto = events.length, state = null, lay = null;
  let problem = null, dirty = true, frames = 0, selectedId = null, hoverId = null;

  function rebuild() {
    state = buildState(events, upto);
    const sel = $(".wb-problem");
    if (sel.options.length !== state.problems.length) {
      sel.innerHTML = state.problems.map(p => `<option value="${p}">${p}</option>`).join("");
      if (problem === null && state.problems.length) problem = state.problems[0];
      sel.value = problem;
    }
    lay = problem === null ? null : layout(state, problem);
    const slider = $(".wb-slider"); slider.max = events.length; slider.value = upto;
    $(".wb-step").textContent = `${upto}/${events.length}`;
    const count = [...state.nodes.values()].filter(n => n.problem === problem).length;
    $(".wb-count").textContent = `${count} nodes`;
    el.dataset.nodes = String(count);            // read by the browser tests
    el.dataset.totalNodes = String(state.nodes.size);
  }
  function toScreen(p) {
    const W = canvas.width, H = canvas.height, m = 14;
    return { x: m + (lay.cols > 1 ? p.x / (lay.cols - 1) : 0.5) * (W - 2 * m), y: m + (lay.rows > 1 ? p.y / (lay.rows - 1) : 0.5) * (H - 2 * m) };
  }
  function draw() {
    frames++;
    const rect = canvas.getBoundingClientRect();
    const w = Math.max(200, Math.floor(rect.width)), h = model.get("height");
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!lay) return;
    const colourBy = $(".wb-colour").value, pts = new Map();
    for (const [id, p] of lay.pos) pts.set(id, toScreen(p));
    const hl = new Set(hoverId !== null ? pathOf(state, hoverId).map(n => n.id) : []);
    ctx.lineWidth = 1;
    for (const [id, p] of pts) {
      const n = state.nodes.get(id);
      if (n.parent === null || n.parent === undefined || !pts.has(n.parent)) continue;
      const q = pts.get(n.parent);
      ctx.strokeStyle = hl.has(id) ? "#1f6feb" : (n.status === "pruned" ? "#e3e3e3" : "#c9cdd3");
      ctx.beginPath(); ctx.moveTo(q.x, q.y); ctx.lineTo(p.x, p.y); ctx.stroke();
    }
    for (const [id, p] of pts) {
      const n = state.nodes.get(id), r = Math.max(2, Math.min(9, Math.sqrt(n.tokens || 1)));
      ctx.fillStyle = n.status === "pruned" ? STATUS_COLORS.pruned
        : colourBy === "cluster" && n.cluster !== undefined && n.cluster !== null ? clusterColor(n.cluster) : scoreColor(n.score);
      ctx.beginPath();
      if (n.finished) ctx.rect(p.x - r, p.y - r, 2 * r, 2 * r); else ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.fill();
      if (n.status === "selected" || id === selectedId || hl.has(id)) {
        ctx.strokeStyle = n.status === "selected" ? STATUS_COLORS.selected : "#1f6feb"; ctx.lineWidth = 2.5; ctx.stroke(); ctx.lineWidth = 1;
      }
    }
    el._wbPoints = pts;                          // positions for hit tests (and the browser tests)
  }
  function loop() { if (dirty) { rebuild(); draw(); dirty = false; } raf = requestAnimationFrame(loop); }
  let raf = requestAnimationFrame(loop);

  function hit(evt) {
    if (!el._wbPoints) return null;
    const r = canvas.getBoundingClientRect(), x = evt.clientX - r.left, y = evt.clientY - r.top;
    let best = null, bd = 81;
    for (const [id, p] of el._wbPoints) { const d = (p.x - x) ** 2 + (p.y - y) ** 2; if (d < bd) { bd = d; best = id; } }
    return best;
  }
  function showDetail(id) {
    const path = pathOf(state, id), n = state.nodes.get(id);
    const tokens = path.reduce((a, m) => a + (m.tokens || 0), 0);
    const shared = path.map(m => `${m.tokens} tok × ${leavesBelow(state, m)} branch${leavesBelow(state, m) === 1 ? "" : "es"}`);
    const esc = s => String(s).replace(/[&<>]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c]));
    detail.innerHTML = `<div class="wb-node-title">node ${id} · depth ${n.depth} · ${n.status}${n.finished ? " · finished, answer " + esc(n.answer) : ""}</div>
      <pre class="wb-path">${esc(path.map(m => m.text.trim()).join("\n"))}</pre>
      <div>PRM scores: ${path.slice(1).map(m => m.score === null ? "–" : m.score.toFixed(2)).join(" → ") || "–"}</div>
      <div>KV: ${tokens} tokens on the path; ${n.tokens} unique to this node; per node on the path (tokens × live branches sharing them): ${shared.join(", ")}</div>
      ${n.cluster !== undefined ? `<div>ETS cluster ${n.cluster}</div>` : ""}${n.visits ? `<div>MCTS visits ${n.visits}</div>` : ""}`;
  }
  canvas.addEventListener("click", evt => { const id = hit(evt); if (id === null) return; selectedId = id; showDetail(id); dirty = true; model.send({ type: "click", node: id }); });
  canvas.addEventListener("mousemove", evt => { const id = hit(evt); if (id !== hoverId) { hoverId = id; dirty = true; if (id !== null) model.send({ type: "hover", node: id }); } });
  $(".wb-problem").addEventListener("change", e => { problem = +e.target.value; dirty = true; });
  $(".wb-colour").addEventListener("change", () => { dirty = true; });
  $(".wb-slider").addEventListener("input", e => { upto = +e.target.value; $(".wb-follow").checked = upto === events.length; dirty = true; });
  model.on("msg:custom", msg => {
    if (msg.type === "reset") events = msg.events.slice();
    else if (msg.type === "events") events.push(...msg.events);
    else return;
    if ($(".wb-follow").checked) upto = events.length;
    dirty = true;
  });
  model.on("change:snapshot", () => { const s = model.get("snapshot") || []; if (s.length >= events.length) { events = s.slice(); if ($(".wb-follow").checked) upto = events.length; dirty = true; } });
  model.on("change:height", () => { dirty = true; });
  const ro = new ResizeObserver(() => { dirty = true; }); ro.observe(el);
  model.send({ type: "sync" });
  el._wbFrames = () => frames;
  return () => { cancelAnimationFrame(raf); ro.disconnect(); };
}

export default { render };
