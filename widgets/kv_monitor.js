// KVCacheMonitor: pool bytes vs per-path bytes vs the unique-token limit over time, block occupancy, sharing per
// live branch, and torch.cuda memory when the model is on CUDA. Hovering a TreeExplorer node highlights its blocks.
const SERIES = [["naive", "#cf222e", "per-path caches"], ["unique", "#2da44e", "unique-token limit"], ["pool", "#1f6feb", "KV pool (in use, dashed)"],
                ["held", "#bf8700", "held: pool + transients (measured on CUDA, ledger on CPU)"], ["cuda_allocated", "#8250df", "torch.cuda allocated"]];
const fmt = b => b >= 1 << 30 ? (b / (1 << 30)).toFixed(2) + " GiB" : b >= 1 << 20 ? (b / (1 << 20)).toFixed(2) + " MiB" : (b / 1024).toFixed(1) + " KiB";

function render({ model, el }) {
  el.classList.add("wb-kv");
  el.innerHTML = `<div class="wb-kv-head"><b>KV cache</b> <span class="wb-kv-now"></span></div>
    <canvas class="wb-kv-chart"></canvas>
    <div class="wb-kv-legend">${SERIES.map(([k, c, l]) => `<span class="wb-kv-${k}"><span style="color:${c}">━</span> ${l}</span>`).join(" ")}</div>
    <div class="wb-kv-sub">blocks in use (darker = shared by more paths; blue = the hovered node's path)</div>
    <canvas class="wb-kv-blocks"></canvas>
    <div class="wb-kv-sub">live branches: share of their path's tokens held in blocks shared with other branches</div>
    <canvas class="wb-kv-sharing"></canvas>`;
  const $ = s => el.querySelector(s);
  let dirty = true, raf;
  function size(c, h) { const w = Math.max(200, Math.floor(c.getBoundingClientRect().width)); if (c.width !== w || c.height !== h) { c.width = w; c.height = h; } return c.getContext("2d"); }
  function chart() {
    const s = model.get("samples") || [], c = $(".wb-kv-chart"), ctx = size(c, 150);
    ctx.clearRect(0, 0, c.width, c.height);
    const cuda = s.some(p => p.cuda_allocated);
    el.querySelector(".wb-kv-cuda_allocated").style.display = cuda ? "" : "none";
    if (!s.length) return;
    const keys = SERIES.filter(([k]) => k !== "cuda_allocated" || cuda);
    const top = Math.max(1, ...s.flatMap(p => keys.map(([k]) => p[k] || 0)));
    for (const [k, col] of keys) {
      ctx.strokeStyle = col; ctx.lineWidth = k === "pool" ? 2.5 : 1.5; ctx.setLineDash(k === "pool" ? [6, 4] : []); ctx.beginPath();
      s.forEach((p, i) => { const x = 30 + i / Math.max(1, s.length - 1) * (c.width - 36), y = c.height - 14 - (p[k] || 0) / top * (c.height - 24); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.stroke();
    }
    ctx.setLineDash([]); ctx.fillStyle = "#57606a"; ctx.fillText(fmt(top), 2, 10); ctx.fillText("0", 2, c.height - 12);
    const last = s[s.length - 1], peak = k => Math.max(...s.map(p => p[k] || 0));
    $(".wb-kv-now").textContent = `now: pool ${fmt(last.pool)} · peak: pool ${fmt(peak("pool"))}, held ${fmt(peak("held"))}, per-path ${fmt(peak("naive"))}, unique ${fmt(peak("unique"))}` +
      (peak("naive") ? ` (pool/per-path ${(peak("pool") / peak("naive")).toFixed(2)})` : "") +
      (cuda ? ` · cuda allocated ${fmt(last.cuda_allocated)}, reserved ${fmt(last.cuda_reserved)}` : "") + ` · ${model.get("device")}`;
    el.dataset.samples = String(s.length);
  }
  function blocks() {
    const b = model.get("blocks") || [], hl = new Set(model.get("highlight") || []), c = $(".wb-kv-blocks"), ctx = size(c, 40);
    ctx.clearRect(0, 0, c.width, c.height);
    const n = b.length; if (!n) return;
    const cols = Math.ceil(Math.sqrt(n * c.width / c.height)), rows = Math.ceil(n / cols), cw = c.width / cols, ch = c.height / rows;
    b.forEach((r, i) => {
      ctx.fillStyle = hl.has(i) ? "#1f6feb" : r === 0 ? "#f0f2f4" : `hsl(30, 80%, ${Math.max(25, 75 - 10 * r)}%)`;
      ctx.fillRect((i % cols) * cw, Math.floor(i / cols) * ch, Math.max(1, cw - 0.5), Math.max(1, ch - 0.5));
    });
    el.dataset.blocks = String(n); el.dataset.highlighted = String(hl.size);
  }
  function sharing() {
    const sh = model.get("sharing") || [], c = $(".wb-kv-sharing"), ctx = size(c, 50);
    ctx.clearRect(0, 0, c.width, c.height);
    const w = c.width / Math.max(1, sh.length);
    sh.forEach((f, i) => { ctx.fillStyle = "#1f6feb"; const h = f * (c.height - 4); ctx.fillRect(i * w, c.height - h, Math.max(1, w - 1), h); });
  }
  function loop() { if (dirty) { chart(); blocks(); sharing(); dirty = false; } raf = requestAnimationFrame(loop); }
  raf = requestAnimationFrame(loop);
  for (const t of ["samples", "blocks", "highlight", "sharing", "device"]) model.on(`change:${t}`, () => { dirty = true; });
  const ro = new ResizeObserver(() => { dirty = true; }); ro.observe(el);
  return () => { cancelAnimationFrame(raf); ro.disconnect(); };
}
export default { render };
