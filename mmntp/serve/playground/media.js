// Audio played as it streams (Web Audio) with its waveform, and the motion stick figure.

import { base64Bytes } from "./api.js";

const LEAD_SECONDS = 0.05; // scheduling slack so the first chunk does not start in the past

/** Signed 16-bit little-endian PCM bytes as floats in [-1, 1). */
function pcm16(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

/**
 * Schedules each AudioChunk on an AudioContext the moment it arrives, back to back, and
 * draws what arrived so far. `firstStartAt` (performance.now()) records when playback began.
 */
export class PcmPlayer {
  constructor(context, canvas) {
    this.context = context;
    this.canvas = canvas;
    this.reset(1);
  }

  reset(seconds) {
    this.silence();
    this.seconds = seconds;
    this.chunks = [];
    this.rate = 0;
    this.nextTime = 0;
    this.firstStartAt = null;
    this.draw();
  }

  push(chunk) {
    const samples = pcm16(base64Bytes(chunk.pcm));
    if (!samples.length) return;
    this.rate = chunk.sampleRate;
    const buffer = this.context.createBuffer(1, samples.length, this.rate);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.nextTime, this.context.currentTime + LEAD_SECONDS);
    source.start(at);
    this.sources.push(source);
    this.nextTime = at + buffer.duration;
    this.firstStartAt ??= performance.now();
    this.chunks.push(samples);
    this.draw();
  }

  /** Stop what is playing or scheduled (Stop, or a new request). */
  silence() {
    for (const source of this.sources || []) source.stop();
    this.sources = [];
  }

  /** Min/max per pixel column over the requested duration (it fills as chunks come). */
  draw() {
    const { canvas } = this;
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = "#cbd5e1";
    ctx.fillRect(0, height / 2, width, 1);
    if (!this.chunks.length) return;
    const all = new Float32Array(this.chunks.reduce((n, c) => n + c.length, 0));
    this.chunks.reduce((offset, c) => (all.set(c, offset), offset + c.length), 0);
    const perColumn = Math.max(1, (this.seconds * this.rate) / width);
    ctx.fillStyle = "#1d4ed8";
    for (let px = 0; px * perColumn < all.length && px < width; px++) {
      let lo = 1;
      let hi = -1;
      const end = Math.min(all.length, (px + 1) * perColumn);
      for (let i = Math.floor(px * perColumn); i < end; i++) {
        lo = Math.min(lo, all[i]);
        hi = Math.max(hi, all[i]);
      }
      const top = ((1 - hi) / 2) * height;
      ctx.fillRect(px, top, 1, Math.max(1, ((hi - lo) / 2) * height));
    }
  }
}

// SMPL's 22 joints as the limbs of HumanML3D's kinematic chain (pelvis = 0).
const CHAINS = [
  [0, 2, 5, 8, 11],
  [0, 1, 4, 7, 10],
  [0, 3, 6, 9, 12, 15],
  [9, 14, 17, 19, 21],
  [9, 13, 16, 18, 20],
];
const JOINTS = 22;
const FPS = 20; // HumanML3D's frame rate

/**
 * Frames of 22 [x, y, z] joints from MotionChunk features: 66 values are positions
 * already; 263 are HumanML3D vectors (root yaw velocity, root xz velocity, root height,
 * 21 root-relative joints in the root's facing frame, ...), integrated here.
 */
export function framesToJoints(values, numFeatures, state = { yaw: 0, x: 0, z: 0 }) {
  const frames = [];
  for (let f = 0; f + numFeatures <= values.length; f += numFeatures) {
    const v = values.slice(f, f + numFeatures);
    if (numFeatures === JOINTS * 3) {
      frames.push(Array.from({ length: JOINTS }, (_, j) => v.slice(3 * j, 3 * j + 3)));
      continue;
    }
    if (numFeatures !== 263) throw new Error(`cannot draw ${numFeatures} features per frame`);
    // As HumanML3D's recover_from_ric: the integrated yaw is the root quaternion's
    // half-angle, and its inverse turns the root-frame joints and velocity into the world.
    const [c, s] = [Math.cos(2 * state.yaw), -Math.sin(2 * state.yaw)];
    const turn = ([x, y, z]) => [c * x + s * z + state.x, y, -s * x + c * z + state.z];
    const joints = [[state.x, v[3], state.z]];
    for (let j = 0; j < JOINTS - 1; j++) joints.push(turn(v.slice(4 + 3 * j, 7 + 3 * j)));
    frames.push(joints);
    const [dx, dz] = [c * v[1] + s * v[2], -s * v[1] + c * v[2]];
    Object.assign(state, { yaw: state.yaw + v[0], x: state.x + dx, z: state.z + dz });
  }
  return frames;
}

/** Animates joint frames as a stick figure (front view, x right, y up) at 20 fps. */
export class StickFigure {
  constructor(canvas) {
    this.canvas = canvas;
    this.frames = [];
    this.started = 0;
  }

  reset() {
    this.frames = [];
    this.bounds = null;
    this.state = { yaw: 0, x: 0, z: 0 };
    this.started = performance.now();
    cancelAnimationFrame(this.raf);
    this.raf = requestAnimationFrame(() => this.tick());
  }

  push(chunk) {
    const frames = framesToJoints(chunk.values || [], chunk.numFeatures, this.state);
    this.frames.push(...frames);
    for (const [x, y] of frames.flat()) {
      const [x0, x1, y0, y1] = this.bounds ?? [x, x, y, y];
      this.bounds = [Math.min(x0, x), Math.max(x1, x), Math.min(y0, y), Math.max(y1, y)];
    }
  }

  tick() {
    const { canvas, frames } = this;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (frames.length) {
      const k = Math.floor(((performance.now() - this.started) / 1000) * FPS) % frames.length;
      this.drawFrame(ctx, frames[k]);
      canvas.dataset.frames = String(frames.length);
    }
    this.raf = requestAnimationFrame(() => this.tick());
  }

  drawFrame(ctx, joints) {
    const [x0, x1, y0, y1] = this.bounds; // over every frame so far: the figure keeps its size
    const { width, height } = this.canvas;
    const scale = (0.9 * Math.min(width, height)) / Math.max(x1 - x0, y1 - y0, 1e-6);
    const px = ([x, y]) => [
      width / 2 + (x - (x0 + x1) / 2) * scale,
      height * 0.95 - (y - y0) * scale,
    ];
    ctx.strokeStyle = "#1d4ed8";
    ctx.lineWidth = 3;
    for (const chain of CHAINS) {
      ctx.beginPath();
      chain.forEach((j, i) => (i ? ctx.lineTo : ctx.moveTo).apply(ctx, px(joints[j])));
      ctx.stroke();
    }
  }
}
