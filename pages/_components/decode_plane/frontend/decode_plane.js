// Decode anywhere: the latent plane as a Streamlit component (plain JS, no build step, no third-party code).
//
// Streamlit's component protocol (v1) over postMessage: we send "streamlit:componentReady" once, receive
// "streamlit:render" with the arguments (JSON, and the atlas PNG as bytes), and send back
// "streamlit:setFrameHeight" and, on a click, "streamlit:setComponentValue" with the clicked (u, v).
//
// The server decoded an n x n lattice over the plane's window into one sprite sheet (the atlas): cell
// (i, j) is the decoding of the lattice point (u[j], v[i]), the top row having the largest v. Under the
// pointer we draw the cell of the nearest lattice point: one drawImage, no round trip to the server.
(function () {
  "use strict";

  const plane = document.getElementById("plane");
  const overlay = document.getElementById("overlay");
  const box = document.getElementById("planebox");
  const decoded = document.getElementById("decoded");
  const readout = document.getElementById("readout");
  const legend = document.getElementById("legend");

  const MARGIN = { left: 56, right: 12, top: 10, bottom: 44 };   // at 14 px text; grown with a projector's text
  const GAP = 18;                 // px between the plane and the side column (index.html's #wrap gap)
  const PLANE_MAX = 460, PLANE_MIN = 220;

  let args = null;                // the latest render's arguments
  let theme = null;
  let sheet = null;               // the atlas as an ImageBitmap (or an <img> where createImageBitmap is missing)
  let sheetKey = null;
  let pendingKey = null;
  let geo = null;                 // { left, top, size } of the plot area in CSS px
  let cell = null;                // [i, j] drawn now
  let pointer = null;             // [u, v] under the pointer (or the keyboard's point)
  let lastHeight = 0;

  // measurements a test (or a curious user) can read: hover-to-drawn times in ms
  const stats = window.__decodePlane = { draws: 0, cell: null, latencies: [], lastEvent: null, lastDraw: null, ready: false };

  function send(type, data) {
    window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
  }

  // --- geometry -------------------------------------------------------------------------------------
  function win() { return args.window; }                       // [u0, u1, v0, v1]
  function toPx(u, v) {
    const [u0, u1, v0, v1] = win();
    return [geo.left + (u - u0) / (u1 - u0) * geo.size, geo.top + (v1 - v) / (v1 - v0) * geo.size];
  }
  function toUV(x, y) {
    const [u0, u1, v0, v1] = win();
    return [u0 + (x - geo.left) / geo.size * (u1 - u0), v1 - (y - geo.top) / geo.size * (v1 - v0)];
  }
  function nearest(u, v) {
    const n = args.n, [u0, u1, v0, v1] = win();
    const clamp = (k) => Math.min(Math.max(k, 0), n - 1);
    return [clamp(Math.round((v1 - v) / (v1 - v0) * (n - 1))), clamp(Math.round((u - u0) / (u1 - u0) * (n - 1)))];
  }
  function latticeUV(i, j) {
    const n = args.n, [u0, u1, v0, v1] = win();
    return [u0 + j / (n - 1) * (u1 - u0), v1 - i / (n - 1) * (v1 - v0)];
  }

  function setupCanvas(canvas, w, h) {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return ctx;
  }

  function layout() {
    const width = Math.max(window.innerWidth || document.documentElement.clientWidth || 700, 300);
    const font = args.font_px || 14;
    document.body.style.fontSize = font + "px";
    const grow = font / 14;
    MARGIN.left = Math.round(56 * grow); MARGIN.bottom = Math.round(44 * grow);
    const [th, tw] = args.tile;
    const s = args.scale || 8;
    const side = Math.max(tw * s + 4, 240);
    document.getElementById("side").style.width = side + "px";
    let size = width - side - GAP - MARGIN.left - MARGIN.right - 8;
    if (size < PLANE_MIN) size = width - MARGIN.left - MARGIN.right - 8;    // too narrow: the side goes below
    size = Math.max(PLANE_MIN, Math.min(PLANE_MAX, Math.floor(size)));
    geo = { left: MARGIN.left, top: MARGIN.top, size: size };
    stats.geo = geo;
    const w = size + MARGIN.left + MARGIN.right, h = size + MARGIN.top + MARGIN.bottom;
    box.style.width = w + "px";
    box.style.height = h + "px";
    setupCanvas(plane, w, h);
    setupCanvas(overlay, w, h);
    const dctx = setupCanvas(decoded, tw * s, th * s);
    dctx.imageSmoothingEnabled = false;
  }

  // --- drawing --------------------------------------------------------------------------------------
  function textColour() { return (theme && theme.textColor) || "#31333f"; }

  function niceTicks(a, b, count) {
    const span = b - a;
    if (!(span > 0)) return [a];
    const raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
    const out = [];
    for (let t = Math.ceil(a / step) * step; t <= b + 1e-9 * span; t += step) out.push(Math.abs(t) < 1e-12 ? 0 : t);
    return out;
  }
  function fmt(x) {
    const a = Math.abs(x);
    return a !== 0 && (a < 0.01 || a >= 1e4) ? x.toExponential(1) : (+x.toFixed(2)).toString();
  }

  function drawMarker(ctx, m) {
    const [u0, u1, v0, v1] = win();
    const inside = m.u >= u0 && m.u <= u1 && m.v >= v0 && m.v <= v1;
    const u = Math.min(Math.max(m.u, u0), u1), v = Math.min(Math.max(m.v, v0), v1);
    const [x, y] = toPx(u, v);
    const r = 7;
    ctx.save();
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = "#ffffff";
    ctx.fillStyle = m.colour;
    ctx.beginPath();
    if (m.symbol === "x") {
      for (const pass of [["#ffffff", 5], [m.colour, 2.5]]) {
        ctx.strokeStyle = pass[0]; ctx.lineWidth = pass[1];
        ctx.beginPath();
        ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r); ctx.moveTo(x - r, y + r); ctx.lineTo(x + r, y - r);
        ctx.stroke();
      }
    } else if (m.symbol === "diamond") {
      ctx.moveTo(x, y - r - 1); ctx.lineTo(x + r + 1, y); ctx.lineTo(x, y + r + 1); ctx.lineTo(x - r - 1, y); ctx.closePath();
      ctx.fill(); ctx.stroke();
    } else if (m.symbol === "square") {
      ctx.rect(x - r + 1, y - r + 1, 2 * r - 2, 2 * r - 2); ctx.fill(); ctx.stroke();
    } else {
      ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
    }
    ctx.font = "bold " + Math.round((args.font_px || 14) * 0.93) + "px sans-serif";
    ctx.lineWidth = 3; ctx.strokeStyle = "rgba(255,255,255,0.85)"; ctx.fillStyle = "#000";
    const label = m.name + (inside ? "" : " (off the window)");
    const tw = ctx.measureText(label).width;
    const tx = x + r + 4 + tw > geo.left + geo.size ? x - r - 4 - tw : x + r + 4;
    const below = m.symbol === "x";                  // a sample's label under it, the mean's above: both readable
    ctx.textBaseline = below ? "top" : "bottom";
    const ty = below ? y + 2 : y - 2;
    ctx.strokeText(label, tx, ty);
    ctx.fillText(label, tx, ty);
    ctx.restore();
  }

  function drawPlane() {
    const ctx = plane.getContext("2d");
    const w = plane.width, h = plane.height;
    ctx.save(); ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.clearRect(0, 0, w, h); ctx.restore();
    const { left, top, size } = geo;
    const [u0, u1, v0, v1] = win();
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(left, top, size, size);
    if (args.backdrop && sheet) {
      ctx.save();
      ctx.globalAlpha = 0.45;
      ctx.imageSmoothingEnabled = true;
      // the sheet's cells are centred on lattice points: half a cell sticks out on each side, clipped
      const n = args.n, half = size / (n - 1) / 2;
      ctx.beginPath(); ctx.rect(left, top, size, size); ctx.clip();
      ctx.drawImage(sheet, left - half, top - half, size + 2 * half, size + 2 * half);
      ctx.restore();
    }
    // ticks and grid lines
    const font = args.font_px || 14;
    ctx.font = Math.round(font * 0.86) + "px sans-serif";
    ctx.fillStyle = textColour();
    ctx.strokeStyle = "rgba(128,128,128,0.25)";
    ctx.lineWidth = 1;
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const t of niceTicks(u0, u1, 6)) {
      const [x] = toPx(t, v0);
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + size); ctx.stroke();
      ctx.fillText(fmt(t), x, top + size + 4);
    }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const t of niceTicks(v0, v1, 6)) {
      const [, y] = toPx(u0, t);
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + size, y); ctx.stroke();
      ctx.fillText(fmt(t), left - 4, y);
    }
    ctx.strokeStyle = "rgba(128,128,128,0.8)";
    ctx.strokeRect(left + 0.5, top + 0.5, size - 1, size - 1);
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText(args.x_title || "u", left + size / 2, top + size + MARGIN.bottom - 2);
    ctx.save();
    ctx.translate(Math.round(12 * font / 14), top + size / 2); ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "top";
    ctx.fillText(args.y_title || "v", 0, -6);
    ctx.restore();
    // the test codes
    const d = args.dots || { u: [], v: [], label: [] };
    const colours = args.colours || [];
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, size, size); ctx.clip();
    ctx.globalAlpha = args.backdrop ? 0.8 : 0.6;
    const r = size > 400 ? 2.2 : 1.8;
    for (let k = 0; k < d.u.length; k++) {
      const [x, y] = toPx(d.u[k], d.v[k]);
      ctx.fillStyle = colours[d.label[k]] || "#888";
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.restore();
    for (const m of args.markers || []) drawMarker(ctx, m);
  }

  function drawLegend() {
    const colours = args.colours || [];
    const parts = (args.classes || []).map((name, k) =>
      `<span><span class="sw" style="background:${colours[k] || "#888"}"></span>${escapeHtml(name)}</span>`);
    legend.innerHTML = parts.join("");
  }
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // --- the decoded picture ------------------------------------------------------------------------------
  function drawCell(i, j) {
    if (!sheet) return false;
    const [th, tw] = args.tile;
    const ctx = decoded.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(sheet, j * tw, i * th, tw, th, 0, 0, decoded.width / (window.devicePixelRatio || 1),
                  decoded.height / (window.devicePixelRatio || 1));
    cell = [i, j];
    stats.cell = [i, j];
    stats.draws += 1;
    return true;
  }

  function drawPointer() {
    const ctx = overlay.getContext("2d");
    ctx.save(); ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.clearRect(0, 0, overlay.width, overlay.height); ctx.restore();
    if (!pointer || !cell) return;
    const { left, top, size } = geo;
    const [x, y] = toPx(pointer[0], pointer[1]);
    ctx.strokeStyle = "rgba(0,0,0,0.45)"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + size); ctx.moveTo(left, y); ctx.lineTo(left + size, y); ctx.stroke();
    const [lu, lv] = latticeUV(cell[0], cell[1]);
    const [lx, ly] = toPx(lu, lv);
    ctx.strokeStyle = "#ff4b4b"; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.arc(lx, ly, 5, 0, 2 * Math.PI); ctx.stroke();
  }

  function writeReadout(source) {
    if (!cell) { readout.textContent = ""; return; }
    const [lu, lv] = latticeUV(cell[0], cell[1]);
    const n = args.n;
    const head = source === "pointer" ? "Under the pointer" : source;
    readout.innerHTML = `<b>${escapeHtml(head)}</b>: u = ${fmt(lu)}, v = ${fmt(lv)}` +
      `<br><span class="muted">nearest of a ${n} × ${n} grid, decoded on the server in one pass; ` +
      `click to decode the exact point</span>`;
  }

  function show(u, v, source, eventTime) {
    pointer = [u, v];
    const [i, j] = nearest(u, v);
    if (!cell || cell[0] !== i || cell[1] !== j) {
      if (drawCell(i, j)) writeReadout(source);
    }
    drawPointer();
    if (eventTime !== undefined) {
      stats.lastEvent = eventTime;
      stats.lastDraw = performance.now();
      requestAnimationFrame(() => {
        stats.latencies.push(performance.now() - eventTime);
        if (stats.latencies.length > 500) stats.latencies.shift();
      });
    }
  }

  function showStart() {
    const m = (args.markers || [])[0];
    const [u0, u1, v0, v1] = win();
    const u = m ? Math.min(Math.max(m.u, u0), u1) : (u0 + u1) / 2;
    const v = m ? Math.min(Math.max(m.v, v0), v1) : (v0 + v1) / 2;
    cell = null;
    show(u, v, m ? m.name : "Centre");
    pointer = null;
    drawPointer();
  }

  // --- events ---------------------------------------------------------------------------------------------
  function eventUV(ev) {
    const rect = overlay.getBoundingClientRect();
    const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    const { left, top, size } = geo;
    if (x < left || x > left + size || y < top || y > top + size) return null;
    return toUV(x, y);
  }

  overlay.addEventListener("pointermove", (ev) => {
    if (!args || !geo) return;
    const uv = eventUV(ev);
    if (uv) show(uv[0], uv[1], "pointer", ev.timeStamp);
  });
  overlay.addEventListener("click", (ev) => {
    if (!args || !geo) return;
    const uv = eventUV(ev);
    if (uv) pick(uv[0], uv[1]);
  });
  overlay.addEventListener("keydown", (ev) => {
    if (!args || !geo) return;
    const steps = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0] };
    if (ev.key === "Enter" && pointer) { pick(pointer[0], pointer[1]); ev.preventDefault(); return; }
    if (!steps[ev.key]) return;
    ev.preventDefault();
    const [i, j] = cell || nearest(...latticeUV((args.n - 1) / 2, (args.n - 1) / 2));
    const clamp = (k) => Math.min(Math.max(k, 0), args.n - 1);
    const [u, v] = latticeUV(clamp(i + steps[ev.key][0]), clamp(j + steps[ev.key][1]));
    show(u, v, "pointer", ev.timeStamp);
  });

  function pick(u, v) {
    send("streamlit:setComponentValue", { value: { u: u, v: v, key: args.atlas_key, at: Date.now() }, dataType: "json" });
  }

  // --- Streamlit ----------------------------------------------------------------------------------------
  function reportHeight() {
    const h = Math.ceil(document.getElementById("wrap").getBoundingClientRect().height) + 6;
    if (h !== lastHeight) {
      lastHeight = h;
      send("streamlit:setFrameHeight", { height: h });
    }
  }

  function redraw() {
    layout();
    drawPlane();
    drawLegend();
    showStart();
    reportHeight();
  }

  function loadSheet(bytes, key) {
    pendingKey = key;
    const blob = new Blob([bytes], { type: "image/png" });
    const done = (image) => {
      if (pendingKey !== key) return;          // a newer atlas arrived meanwhile
      sheet = image; sheetKey = key;
      stats.ready = true;
      redraw();
    };
    if (window.createImageBitmap) {
      createImageBitmap(blob).then(done, (err) => { readout.textContent = "Cannot read the decoded grid: " + err; });
    } else {
      const img = new Image();
      img.onload = () => done(img);
      img.src = URL.createObjectURL(blob);
    }
  }

  window.addEventListener("message", (event) => {
    const data = event.data;
    if (!data || data.type !== "streamlit:render") return;
    args = data.args || {};
    theme = data.theme || null;
    if (theme && theme.textColor) document.body.style.color = theme.textColor;
    if (args.atlas_key !== sheetKey && args.atlas) {
      stats.ready = false;
      loadSheet(args.atlas, args.atlas_key);
      layout(); drawPlane(); drawLegend(); reportHeight();   // the dots at once; the pictures once decoded
    } else {
      redraw();
    }
  });
  window.addEventListener("resize", () => { if (args) redraw(); });

  send("streamlit:componentReady", { apiVersion: 1 });
})();
