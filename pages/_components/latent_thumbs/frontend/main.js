// The Latent map's thumbnail view (pages/latent_map.py, aecore.lab.latent.thumbnail_args).
//
// Streamlit's component messages, spoken directly (no build step): "streamlit:componentReady" once,
// then "streamlit:render" with the arguments on every run of the page; we answer with
// "streamlit:setFrameHeight" and, on a click, "streamlit:setComponentValue".
//
// The arguments: the map's 2-D positions (float32 bytes), the points' test indices (int32: the atlas
// cell of each), classes (int16) and colours (RGB bytes); one sprite atlas (a PNG, cell i = test
// image i) and its geometry. The atlas is sent only while we do not hold it: our value reports the key
// of the atlas we hold ({have}), and a click adds {click, index}.
//
// Grey images (MNIST's white ink on black) are drawn as ink in the point's colour on a transparent
// ground: one tinted copy of the atlas, rebuilt when the colours change. Colour images as they are.
"use strict";
(function () {
  const post = (type, data) => window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
  const byId = (id) => document.getElementById(id);
  const canvas = byId("map"), tip = byId("tip"), big = byId("big"), tipText = byId("tiptext"), legendBox = byId("legend");
  const ctx = canvas.getContext("2d"), bigCtx = big.getContext("2d");
  const FADED = 0.1;
  const ZOOM_MIN = 0.3, ZOOM_MAX = 400;
  const QUICK_ABOVE_MS = 30;   // a full draw slower than this: while panning or zooming, move the last picture instead
  const SETTLE_MS = 140;       // and draw in full once the pointer or wheel has rested this long

  // what tests and the curious can read: how long things took, how much was drawn
  const stats = window.__thumbs = {
    renders: 0, draws: 0, quickDraws: 0, drawn: 0, points: 0, lastDrawMs: null, firstDrawMs: null, atlasMs: null,
    tintMs: null, renderToPaintMs: null, firstPaintMs: null, paintedAt: null, atlasKey: null, hover: -1, errors: [],
    where: (i) => where(i),
    redraw: () => { const t = performance.now(); draw(); return performance.now() - t; },   // one full draw, in ms
    top: () => {               // the topmost drawn thumbnail well inside the view: {index, x, y} (CSS px), or null
      const w = cssWidth(), h = args.height || 600;
      for (let j = drawCount - 1; j >= 0; j--) {
        const p = drawList[j];
        if (sx[p] > 60 && sx[p] < w - 60 && sy[p] > 60 && sy[p] < h - 60) return { index: pts.index[p], x: sx[p], y: sy[p] };
      }
      return null;
    },
  };

  let args = {};
  let geom = null;          // atlas geometry {n, cols, rows, cell_w, cell_h, channels, key}
  let atlasBitmap = null;   // the atlas as the data is (the hover's larger image)
  let greyPixels = null;    // its RGBA pixels (grey atlas only), for tinting
  let source = null;        // what thumbnails are drawn from
  let tintCanvas = null, tintKey = null;
  let pts = { n: 0, x: new Float32Array(0), y: new Float32Array(0), index: new Int32Array(0),
              label: new Int16Array(0), rgb: new Uint8Array(0), value: null };
  let fit = { cx: 0, cy: 0, kx: 1, ky: 1 };   // data -> CSS px at zoom 1: each axis fills the view, as plotly's
  let viewKey = null, zoom = 1, panX = 0, panY = 0;
  let sx = new Float32Array(0), sy = new Float32Array(0);
  let drawList = new Int32Array(0), drawCount = 0, half = 4;
  let hover = -1, drag = null, frameHeight = 0, pending = false, queue = Promise.resolve();
  let reported = undefined;  // the atlas key last reported to Python
  let lastArgs = {};         // the emphasis and selection of the previous render
  let painted = null;        // what the last full draw showed (a render that changes nothing is not drawn again)
  let snap = null, snapAt = null, settleTimer = null;   // the last full picture and the zoom and pan it was drawn at

  function owned(b) {          // a fresh, aligned copy of a bytes argument (it may be a view into a larger buffer)
    if (!b) return new Uint8Array(0);
    if (b instanceof Uint8Array) return b.slice();
    if (b instanceof ArrayBuffer) return new Uint8Array(b.slice(0));
    if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength).slice();
    return new Uint8Array(0);
  }
  const typed = (b, T) => { const u = owned(b); return new T(u.buffer, 0, Math.floor(u.byteLength / T.BYTES_PER_ELEMENT)); };

  function cssWidth() { return Math.max(200, canvas.clientWidth || document.body.clientWidth || 800); }

  function sizeCanvas() {
    const dpr = window.devicePixelRatio || 1, w = cssWidth(), h = args.height || 600;
    canvas.style.height = h + "px";
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    if (frameHeight !== h + 2) {
      frameHeight = h + 2;
      post("streamlit:setFrameHeight", { height: frameHeight });
    }
  }

  function computeFit() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let p = 0; p < pts.n; p++) {
      const x = pts.x[p], y = pts.y[p];
      if (!isFinite(x) || !isFinite(y)) continue;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
    if (!isFinite(x0)) { x0 = -1; x1 = 1; y0 = -1; y1 = 1; }
    const w = cssWidth(), h = args.height || 600, margin = 24 + (args.size || 16) / 2;
    const spanX = Math.max(x1 - x0, 1e-9), spanY = Math.max(y1 - y0, 1e-9);
    fit = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, kx: (w - 2 * margin) / spanX, ky: (h - 2 * margin) / spanY };
  }

  async function loadAtlas(bytes, g) {
    const t = performance.now();
    const blob = new Blob([owned(bytes)], { type: "image/png" });
    const bitmap = await createImageBitmap(blob, { premultiplyAlpha: "none", colorSpaceConversion: "none" });
    atlasBitmap = bitmap;
    geom = g;
    if (g.channels === 1) {
      const c = document.createElement("canvas");
      c.width = bitmap.width; c.height = bitmap.height;
      const cc = c.getContext("2d", { willReadFrequently: true });
      cc.drawImage(bitmap, 0, 0);
      greyPixels = cc.getImageData(0, 0, c.width, c.height);
      tintCanvas = document.createElement("canvas");
      tintCanvas.width = c.width; tintCanvas.height = c.height;
      source = tintCanvas;
    } else {
      greyPixels = null; tintCanvas = null; source = bitmap;
    }
    tintKey = null;
    stats.atlasKey = g.key;
    stats.atlasMs = performance.now() - t;
  }

  function tint() {                 // grey atlas -> ink in each point's colour, alpha = the pixel's grey
    const t = performance.now();
    const W = greyPixels.width, H = greyPixels.height, src = greyPixels.data;
    const tctx = tintCanvas.getContext("2d");
    const out = tctx.createImageData(W, H), o = out.data;
    const cols = geom.cols, cw = geom.cell_w, ch = geom.cell_h, n = geom.n;
    const colour = new Uint8Array(n * 3).fill(120);
    for (let p = 0; p < pts.n; p++) {
      const c = pts.index[p];
      if (c >= 0 && c < n) { colour[3 * c] = pts.rgb[3 * p]; colour[3 * c + 1] = pts.rgb[3 * p + 1]; colour[3 * c + 2] = pts.rgb[3 * p + 2]; }
    }
    for (let c = 0; c < n; c++) {
      const x0 = (c % cols) * cw, y0 = Math.floor(c / cols) * ch;
      const r = colour[3 * c], g = colour[3 * c + 1], b = colour[3 * c + 2];
      for (let y = 0; y < ch; y++) {
        let i = ((y0 + y) * W + x0) * 4;
        for (let x = 0; x < cw; x++, i += 4) { o[i] = r; o[i + 1] = g; o[i + 2] = b; o[i + 3] = src[i]; }
      }
    }
    tctx.putImageData(out, 0, 0);
    stats.tintMs = performance.now() - t;
  }

  function thumbSize() {
    const base = args.size || 16;
    return Math.max(3, Math.min(base * Math.pow(zoom, 0.5), 8 * Math.max(geom ? geom.cell_w : 28, 28)));
  }

  function toScreen(x, y) {
    const w = cssWidth(), h = args.height || 600;
    return [w / 2 + panX + (x - fit.cx) * fit.kx * zoom, h / 2 + panY - (y - fit.cy) * fit.ky * zoom];
  }

  function where(testIndex) {       // CSS pixels of a test image's thumbnail centre in this frame, or null
    for (let p = 0; p < pts.n; p++) if (pts.index[p] === testIndex) return toScreen(pts.x[p], pts.y[p]);
    return null;
  }

  function draw() {
    pending = false;
    if (!geom || !source) return;
    const t = performance.now();
    const dpr = window.devicePixelRatio || 1, w = cssWidth(), h = args.height || 600;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const s = thumbSize(), kx = fit.kx * zoom, ky = fit.ky * zoom, ox = w / 2 + panX, oy = h / 2 + panY;
    half = s / 2;
    const cols = geom.cols, cw = geom.cell_w, ch = geom.cell_h, emph = args.emphasis;
    ctx.imageSmoothingEnabled = s < cw * 1.5;           // smooth when shrunk, crisp pixels when enlarged
    if (sx.length !== pts.n) { sx = new Float32Array(pts.n); sy = new Float32Array(pts.n); drawList = new Int32Array(pts.n); }
    drawCount = 0;
    // two passes when a class is searched: the rest faded underneath, the class on top
    for (let pass = 0; pass < (emph >= 0 ? 2 : 1); pass++) {
      ctx.globalAlpha = emph >= 0 && pass === 0 ? FADED : 1;
      for (let p = 0; p < pts.n; p++) {
        if (emph >= 0 && (pts.label[p] === emph) !== (pass === 1)) continue;
        const X = ox + (pts.x[p] - fit.cx) * kx, Y = oy - (pts.y[p] - fit.cy) * ky;
        sx[p] = X; sy[p] = Y;
        if (!(X > -half && X < w + half && Y > -half && Y < h + half)) continue;   // off screen (or NaN)
        const c = pts.index[p];
        ctx.drawImage(source, (c % cols) * cw, Math.floor(c / cols) * ch, cw, ch, X - half, Y - half, s, s);
        if (pass === (emph >= 0 ? 1 : 0)) drawList[drawCount++] = p;            // what a hover can hit
      }
    }
    ctx.globalAlpha = 1;
    if (args.selected >= 0) {
      const p = rowOf(args.selected);
      if (p >= 0) ring(sx[p], sy[p], half + 5);
    }
    if (args.own) star(...toScreen(args.own[0], args.own[1]));
    if (!snap) snap = document.createElement("canvas");
    if (snap.width !== canvas.width || snap.height !== canvas.height) { snap.width = canvas.width; snap.height = canvas.height; }
    snap.getContext("2d").drawImage(canvas, 0, 0);
    snapAt = { zoom: zoom, panX: panX, panY: panY };
    outline();
    const ms = performance.now() - t;
    stats.lastDrawMs = ms;
    if (stats.firstDrawMs === null) stats.firstDrawMs = ms;
    stats.draws++; stats.drawn = drawCount; stats.points = pts.n; stats.paintedAt = performance.now();
  }

  function outline() {          // the hovered thumbnail's frame, over the picture (never part of the snapshot)
    if (hover < 0) return;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.lineWidth = 2; ctx.strokeStyle = "#ff2b2b";
    ctx.strokeRect(sx[hover] - half - 1, sy[hover] - half - 1, 2 * half + 2, 2 * half + 2);
  }

  function hoverDraw() {        // a new hover: the last full picture and a frame, not a full draw
    if (!snap || !snapAt || snapAt.zoom !== zoom || snapAt.panX !== panX || snapAt.panY !== panY) { requestDraw(); return; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(snap, 0, 0);
    outline();
  }

  function rowOf(testIndex) {
    for (let p = 0; p < pts.n; p++) if (pts.index[p] === testIndex) return p;
    return -1;
  }

  function ring(x, y, r) {
    ctx.lineWidth = 4; ctx.strokeStyle = "#ffffff";
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
    ctx.lineWidth = 2; ctx.strokeStyle = "#000000";
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.stroke();
  }

  function star(x, y) {
    ctx.font = "26px sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.lineWidth = 3; ctx.strokeStyle = "#ffffff"; ctx.strokeText("★", x, y);
    ctx.fillStyle = "#000000"; ctx.fillText("★", x, y);
  }

  function requestDraw() {
    if (!pending) { pending = true; requestAnimationFrame(draw); }
  }

  function quickDraw() {     // the last full picture, moved and scaled to the new zoom and pan
    const dpr = window.devicePixelRatio || 1, w = cssWidth(), h = args.height || 600, f = zoom / snapAt.zoom;
    const dx = w / 2 + panX - (w / 2 + snapAt.panX) * f, dy = h / 2 + panY - (h / 2 + snapAt.panY) * f;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(snap, dx * dpr, dy * dpr, canvas.width * f, canvas.height * f);
    stats.quickDraws++;
  }

  function moved() {          // after a pan or zoom: a quick picture now when full ones are slow, the full one soon
    if (snap && snapAt && stats.lastDrawMs > QUICK_ABOVE_MS) {
      quickDraw();
      clearTimeout(settleTimer);
      settleTimer = setTimeout(requestDraw, SETTLE_MS);
    } else {
      requestDraw();
    }
  }

  function showLegend() {
    legendBox.textContent = "";
    const legend = args.legend || [];
    legendBox.style.display = legend.length && legend.length <= 20 ? "block" : "none";
    legend.forEach(([name, colour], k) => {
      const row = document.createElement("div");
      const sw = document.createElement("span");
      sw.className = "sw"; sw.style.background = colour;
      row.appendChild(sw);
      row.appendChild(document.createTextNode(name));          // text, never HTML: names come from data files
      if (args.emphasis >= 0 && k !== args.emphasis) row.style.opacity = "0.35";
      legendBox.appendChild(row);
    });
  }

  function report(extra) {
    const value = Object.assign({ have: stats.atlasKey, click: null, index: null }, extra || {});
    reported = value.have;
    post("streamlit:setComponentValue", { value: value, dataType: "json" });
  }

  async function render(a) {
    const t0 = performance.now();
    stats.renders++;
    args = a;
    pts = { n: a.n_points | 0, index: typed(a.index, Int32Array), label: typed(a.labels, Int16Array),
            rgb: owned(a.colours), value: a.values ? typed(a.values, Float32Array) : null };
    const xy = typed(a.xy, Float32Array);
    pts.x = new Float32Array(pts.n); pts.y = new Float32Array(pts.n);
    for (let p = 0; p < pts.n; p++) { pts.x[p] = xy[2 * p]; pts.y[p] = xy[2 * p + 1]; }
    const before = lastArgs;
    lastArgs = { emphasis: a.emphasis, selected: a.selected };
    if (a.view !== viewKey || a.emphasis !== before.emphasis) {      // another map, or a class searched: all of it
      viewKey = a.view; zoom = 1; panX = 0; panY = 0; hover = -1; hideTip();
    }
    sizeCanvas();
    computeFit();
    if (a.selected !== before.selected && a.selected >= 0) {        // a new selection out of sight: bring it in
      const at = where(a.selected), w = cssWidth(), h = a.height || 600;
      if (at && (at[0] < 20 || at[0] > w - 20 || at[1] < 20 || at[1] > h - 20)) { panX += w / 2 - at[0]; panY += h / 2 - at[1]; }
    }
    showLegend();
    const g = a.geom;
    if (a.atlas && (!geom || geom.key !== g.key || !source)) await loadAtlas(a.atlas, g);
    if (!source || !geom || geom.key !== g.key) {   // the atlas was not sent, and we do not hold it: ask for it
      if (reported !== null) report({ have: null });
      return;
    }
    if (greyPixels && tintKey !== a.colour_key) { tint(); tintKey = a.colour_key; }
    const shows = JSON.stringify([a.view, a.colour_key, a.selected, a.emphasis, a.size, a.own, a.height, g.key,
                                  cssWidth(), zoom, panX, panY]);
    if (shows !== painted) {
      draw();
      painted = shows;
      stats.renderToPaintMs = performance.now() - t0;
      if (stats.firstPaintMs === null) stats.firstPaintMs = stats.renderToPaintMs;
    }
    if (a.have !== geom.key && reported !== geom.key) report({});          // tell Python we hold it now
  }

  function hit(mx, my) {           // the topmost thumbnail under the pointer, or -1
    for (let j = drawCount - 1; j >= 0; j--) {
      const p = drawList[j];
      if (Math.abs(sx[p] - mx) <= half && Math.abs(sy[p] - my) <= half) return p;
    }
    return -1;
  }

  function hideTip() { tip.style.display = "none"; }

  function showTip(p, mx, my) {
    const c = pts.index[p], cw = geom.cell_w, ch = geom.cell_h;
    const scale = Math.max(2, Math.round(112 / Math.max(cw, ch)));
    big.width = cw * scale; big.height = ch * scale;
    bigCtx.imageSmoothingEnabled = false;
    bigCtx.drawImage(atlasBitmap, (c % geom.cols) * cw, Math.floor(c / geom.cols) * ch, cw, ch, 0, 0, big.width, big.height);
    const label = pts.label[p], classes = args.classes || [];
    let text = "#" + c.toLocaleString("en-US") + " · " + (label >= 0 && label < classes.length ? classes[label] : "unlabelled");
    if (pts.value && args.value_name) text += " · " + args.value_name + " " + Number(pts.value[p]).toPrecision(4);
    tipText.textContent = text;
    tip.style.display = "block";
    const w = cssWidth(), h = args.height || 600, tw = tip.offsetWidth, th = tip.offsetHeight;
    let left = mx + 16, top = my + 16;
    if (left + tw > w - 4) left = mx - tw - 16;
    if (top + th > h - 4) top = my - th - 16;
    tip.style.left = Math.max(4, left) + "px";
    tip.style.top = Math.max(4, top) + "px";
  }

  function pointer(ev) {
    const r = canvas.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [mx, my] = pointer(ev);
    const next = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, zoom * Math.exp(-ev.deltaY * 0.0015)));
    const w = cssWidth(), h = args.height || 600, f = next / zoom;
    panX = mx - w / 2 - (mx - w / 2 - panX) * f;          // the point under the pointer stays put
    panY = my - h / 2 - (my - h / 2 - panY) * f;
    zoom = next;
    hideTip(); hover = -1; moved();
  }, { passive: false });

  canvas.addEventListener("pointerdown", (ev) => {
    const [mx, my] = pointer(ev);
    drag = { x: mx, y: my, panX: panX, panY: panY, moved: false };
    canvas.setPointerCapture(ev.pointerId);
  });

  canvas.addEventListener("pointermove", (ev) => {
    if (!geom) return;
    const [mx, my] = pointer(ev);
    if (drag) {
      const dx = mx - drag.x, dy = my - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
      if (drag.moved) {
        canvas.classList.add("dragging");
        panX = drag.panX + dx; panY = drag.panY + dy;
        hideTip(); hover = -1; moved();
        return;
      }
    }
    const p = hit(mx, my);
    if (p !== hover) { hover = p; stats.hover = p >= 0 ? pts.index[p] : -1; hoverDraw(); }
    if (p >= 0) showTip(p, mx, my); else hideTip();
  });

  canvas.addEventListener("pointerup", (ev) => {
    const [mx, my] = pointer(ev);
    const wasDrag = drag && drag.moved;
    drag = null;
    canvas.classList.remove("dragging");
    if (wasDrag) return;
    const p = hit(mx, my);
    if (p < 0) return;
    args.selected = pts.index[p];
    requestDraw();
    report({ click: Date.now().toString(36) + Math.random().toString(36).slice(2, 8), index: pts.index[p] });
  });

  canvas.addEventListener("pointerleave", () => { if (!drag) { hover = -1; stats.hover = -1; hideTip(); hoverDraw(); } });
  canvas.addEventListener("dblclick", () => { zoom = 1; panX = 0; panY = 0; requestDraw(); });
  window.addEventListener("resize", () => { if (geom) { sizeCanvas(); computeFit(); requestDraw(); } });

  window.addEventListener("message", (ev) => {
    const data = ev.data;
    if (!data || data.type !== "streamlit:render") return;
    const a = data.args || {};
    queue = queue.then(() => render(a)).catch((err) => { stats.errors.push(String(err)); });
  });

  post("streamlit:componentReady", { apiVersion: 1 });
})();
