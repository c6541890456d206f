// One entry per tab: how its form becomes a request (`request`), and how its view is set up
// (`start`), shows each chunk (`chunk`), and optionally stops (`stop`) and ends (`end`).
// The run loop, timings, errors and curl live in app.js and are the same for every tab.

import { ApiError } from "./api.js";
import { ForecastChart, parseSeries } from "./chart.js";
import { PcmPlayer, StickFigure } from "./media.js";

/**
 * Form values by name: `text` exactly as typed (a prompt's trailing space matters), `num`
 * a number, or undefined when left blank or disabled (as an HTML form leaves those out).
 */
export function formReader(form) {
  const text = (name) => form.elements[name].value;
  const blank = (name) => form.elements[name].disabled || text(name).trim() === "";
  return { text, num: (name) => (blank(name) ? undefined : Number(text(name))) };
}

let audioContext = null; // one per page, made on the first click (autoplay policies)

export const TABS = {
  text: {
    request: (f) => ({
      prompt: [{ text: f.text("prompt") }],
      output: { text: { maxTokens: f.num("max_tokens") } },
      sampling: { temperature: f.num("temperature"), seed: f.num("seed") },
    }),
    start(panel) {
      const out = panel.querySelector(".text-output");
      out.textContent = "";
      return { out };
    },
    chunk({ out }, message) {
      if (message.text) out.textContent += message.text.delta || "";
    },
  },

  forecast: {
    request(f) {
      let series;
      try {
        series = parseSeries(f.text("csv"));
      } catch (e) {
        const field = "prompt.timeseries";
        throw new ApiError({ status: "INVALID_ARGUMENT", message: e.message, field });
      }
      // proto3 JSON writes a missing (NaN) double as the string "NaN"
      const values = series.values.map((v) => (Number.isNaN(v) ? "NaN" : v));
      return {
        history: series, // for the chart only: buildRequest sends prompt, output, sampling
        prompt: [{ timeseries: { values } }],
        output: {
          timeseries: {
            horizon: f.num("horizon"),
            numSamples: f.num("num_samples"),
            quantiles: [0.1, 0.5, 0.9], // the band's edges and the median
          },
        },
        sampling: { seed: f.num("seed") },
      };
    },
    start(panel, request) {
      const canvas = panel.querySelector(".chart");
      const chart = (canvas.chart ??= new ForecastChart(canvas));
      const { values, timestamps } = request.history;
      chart.reset(values, request.output.timeseries.horizon || 0, timestamps);
      return { chart };
    },
    chunk({ chart }, message) {
      if (message.series) chart.addStep(message.series);
    },
  },

  image: {
    request: (f) => ({
      prompt: [{ text: f.text("caption") }],
      output: { image: { head: f.text("head"), width: f.num("width"), height: f.num("height") } },
      // steps is disabled (so left out) while the vq head is chosen
      sampling: { guidanceScale: f.num("guidance"), numSteps: f.num("steps"), seed: f.num("seed") },
    }),
    start(panel, request) {
      const img = panel.querySelector(".image-output");
      const progress = panel.querySelector(".progress");
      img.removeAttribute("src");
      img.alt = request.prompt[0].text;
      delete img.dataset.final;
      img.dataset.chunks = "0";
      progress.textContent = "";
      return { img, progress };
    },
    chunk({ img, progress }, message) {
      const chunk = message.image;
      if (!chunk) return;
      img.src = `data:image/png;base64,${chunk.png}`;
      img.dataset.final = String(Boolean(chunk.final));
      img.dataset.chunks = String(Number(img.dataset.chunks) + 1);
      const rows = `${chunk.rowsDone || 0}/${chunk.totalRows || 0} rows`;
      progress.textContent = chunk.final ? `final image (${rows})` : `preview: ${rows}`;
    },
  },

  audio: {
    request: (f) => ({
      prompt: [{ text: f.text("prompt") }],
      output: { audio: { seconds: f.num("seconds") } },
      sampling: { seed: f.num("seed") },
    }),
    start(panel, request) {
      audioContext ??= new AudioContext();
      audioContext.resume(); // inside the click: allowed to start sound
      const canvas = panel.querySelector(".waveform");
      const player = (canvas.player ??= new PcmPlayer(audioContext, canvas));
      player.reset(request.output.audio.seconds || 1);
      return { player, panel, chunksAfterStart: 0 };
    },
    chunk(view, message) {
      if (!message.audio) return;
      if (view.player.firstStartAt !== null) view.chunksAfterStart++;
      view.player.push(message.audio);
    },
    stop: ({ player }) => player.silence(),
    end({ player, panel, chunksAfterStart }) {
      // Read by the browser test: playback began while chunks were still arriving.
      if (player.firstStartAt !== null) panel.dataset.firstPlayAt = String(player.firstStartAt);
      panel.dataset.chunksAfterPlay = String(chunksAfterStart);
    },
  },

  motion: {
    request: (f) => ({
      prompt: [{ text: f.text("prompt") }],
      output: { motion: { frames: f.num("frames") } },
      sampling: { seed: f.num("seed") },
    }),
    start(panel) {
      const canvas = panel.querySelector(".figure");
      const figure = (canvas.figure ??= new StickFigure(canvas));
      figure.reset();
      return { figure };
    },
    chunk({ figure }, message) {
      if (message.motion) figure.push(message.motion);
    },
  },
};
