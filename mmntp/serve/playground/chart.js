// The forecast chart: history, median and the 10-90 % band on a canvas, with ticks.

const PAD = { left: 56, right: 16, top: 16, bottom: 32 };
const COLOURS = { history: "#334155", median: "#1d4ed8", band: "rgba(59, 130, 246, 0.25)" };

/** About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten). */
export function ticks(lo, hi, count = 6) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** A chart over `history` (numbers, NaN for gaps) that grows one forecast step at a time. */
export class ForecastChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset([]);
  }

  reset(history, horizon = 0, timestamps = []) {
    this.history = history;
    this.horizon = horizon;
    this.timestamps = timestamps;
    this.steps = []; // {median, low, high} per forecast step
    this.draw();
  }

  /** Add one SeriesChunk: median and the quantile levels nearest 0.1 and 0.9. */
  addStep(chunk) {
    const levels = chunk.quantileLevels || [];
    const values = chunk.quantileValues || [];
    const at = (q) => {
      if (!levels.length) return chunk.median;
      let best = 0;
      levels.forEach((l, i) => {
        if (Math.abs(l - q) < Math.abs(levels[best] - q)) best = i;
      });
      return values[best];
    };
    this.steps[chunk.step || 0] = { median: chunk.median, low: at(0.1), high: at(0.9) };
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const n = this.history.length;
    const total = n + Math.max(this.horizon, this.steps.length);
    const ys = this.history.concat(this.steps.flatMap((s) => (s ? [s.low, s.high] : [])));
    const finite = ys.filter(Number.isFinite);
    if (total < 2 || !finite.length) {
      canvas.dataset.plotted = "0";
      return;
    }
    let lo = Math.min(...finite);
    let hi = Math.max(...finite);
    if (hi === lo) [lo, hi] = [lo - 1, hi + 1];
    const w = canvas.width - PAD.left - PAD.right;
    const h = canvas.height - PAD.top - PAD.bottom;
    const x = (i) => PAD.left + (i / (total - 1)) * w;
    const y = (v) => PAD.top + (1 - (v - lo) / (hi - lo)) * h;
    this.axes(ctx, { total, lo, hi, x, y });
    const steps = this.steps.map((s, i) => s && { ...s, i: n + i }).filter(Boolean);
    let plotted = 1;
    if (steps.length) {
      ctx.fillStyle = COLOURS.band;
      ctx.beginPath();
      steps.forEach((s, k) => (k ? ctx.lineTo : ctx.moveTo).call(ctx, x(s.i), y(s.high)));
      [...steps].reverse().forEach((s) => ctx.lineTo(x(s.i), y(s.low)));
      ctx.closePath();
      ctx.fill();
      line(ctx, steps.map((s) => [x(s.i), y(s.median)]), COLOURS.median);
      plotted = 3;
    }
    line(ctx, this.history.map((v, i) => [x(i), Number.isFinite(v) ? y(v) : NaN]), COLOURS.history);
    // What a test (or a screen reader's summary) can read without parsing pixels.
    canvas.dataset.plotted = String(plotted);
    canvas.dataset.steps = String(steps.length);
  }

  /** The x label of position `i`: the history's timestamp (else its index), then +step. */
  label(i) {
    const n = this.history.length;
    return i < n ? String(this.timestamps[i] ?? i) : `+${i - n + 1}`;
  }

  axes(ctx, { total, lo, hi, x, y }) {
    const { width, height } = this.canvas;
    ctx.strokeStyle = "#94a3b8";
    ctx.fillStyle = "#475569";
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(PAD.left, PAD.top);
    ctx.lineTo(PAD.left, height - PAD.bottom);
    ctx.lineTo(width - PAD.right, height - PAD.bottom);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const v of ticks(lo, hi, 5)) {
      ctx.fillText(String(v), PAD.left - 6, y(v));
      ctx.fillRect(PAD.left - 4, Math.round(y(v)), 4, 1);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const i of ticks(0, total - 1, 10).filter(Number.isInteger)) {
      ctx.fillText(this.label(i), x(i), height - PAD.bottom + 6);
      ctx.fillRect(Math.round(x(i)), height - PAD.bottom, 1, 4);
    }
    if (this.history.length && total > this.history.length) {
      ctx.setLineDash([4, 4]); // where the forecast starts
      ctx.beginPath();
      ctx.moveTo(x(this.history.length - 0.5), PAD.top);
      ctx.lineTo(x(this.history.length - 0.5), height - PAD.bottom);
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }
}

/** A polyline through [x, y] points; NaN y breaks it (a missing value). */
function line(ctx, points, colour) {
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.beginPath();
  let pen = false;
  for (const [px, py] of points) {
    if (Number.isNaN(py)) pen = false;
    else if (pen) ctx.lineTo(px, py);
    else {
      ctx.moveTo(px, py);
      pen = true;
    }
  }
  ctx.stroke();
}

/**
 * A CSV (or pasted column) as {values, timestamps}: one numeric column, or
 * timestamp,value; an optional header; empty or NaN values are gaps. Throws naming the line.
 */
export function parseSeries(text) {
  const values = [];
  const timestamps = [];
  const rows = text.split(/\r?\n/).map((r) => r.trim()).filter((r) => r);
  rows.forEach((row, k) => {
    const cells = row.split(/[,;\t]/).map((c) => c.trim().replace(/^"|"$/g, ""));
    if (cells.length > 2) throw new Error(`line ${k + 1}: expected value or timestamp,value`);
    const cell = cells.at(-1);
    const value = cell === "" || /^nan$/i.test(cell) ? NaN : Number(cell);
    if (Number.isNaN(value) && cell !== "" && !/^nan$/i.test(cell)) {
      if (k === 0) return; // a header
      throw new Error(`line ${k + 1}: ${JSON.stringify(cell)} is not a number`);
    }
    values.push(value);
    if (cells.length === 2) timestamps.push(cells[0]);
  });
  if (!values.length) throw new Error("no values");
  return { values, timestamps };
}
