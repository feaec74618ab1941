// wrel demo page: send the image as a multipart form, show the returned overlay.
// The answer carries the foreground probabilities (8-bit PNG, full size): the threshold slider
// re-thresholds them here, in the browser, so moving it sends nothing to the server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, example: null, limits: null, threshold: 0.5, result: null };
const OVERLAY_COLOR = [255, 48, 48]; // as wrel.inference.outputs.OVERLAY_COLOR, alpha 0.5
// Formats a browser can show before the server has rendered them (TIFF is not one).
const BROWSER_FORMATS = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"];

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
  if (message) $("status").textContent = "";
}

function showPreview(src, note) {
  $("preview").hidden = !src;
  if (src) $("preview").src = src;
  $("preview-note").textContent = note || "";
  $("preview-note").hidden = !note;
}

function selectExample(example, button) {
  state.example = example.id;
  state.file = null;
  $("file").value = "";
  document.querySelectorAll("#examples button").forEach((b) => b.classList.remove("selected"));
  button.classList.add("selected");
  showPreview(`/api/examples/${encodeURIComponent(example.id)}.png`, "");
  $("text").value = example.text;
  showError("");
}

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  state.limits = info.limits;
  state.threshold = info.threshold || 0.5;
  setSlider(state.threshold);
  $("limits").textContent =
    `(PNG, JPEG, TIFF/GeoTIFF 8/16-bit, 1-N bands; up to ${info.limits.max_upload_mb} MB, ` +
    `${info.limits.max_side} px per side)`;
  for (const example of info.examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = example.text;
    const img = document.createElement("img");
    img.src = `/api/examples/${encodeURIComponent(example.id)}.png`;
    img.alt = example.category || "example";
    button.appendChild(img);
    button.addEventListener("click", () => selectExample(example, button));
    $("examples").appendChild(button);
  }
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0] || null;
  state.file = file;
  state.example = null;
  document.querySelectorAll("#examples button").forEach((b) => b.classList.remove("selected"));
  showError("");
  if (!file) return showPreview("", "");
  if (BROWSER_FORMATS.includes(file.type)) {
    showPreview(URL.createObjectURL(file), "");
  } else {
    showPreview("", `${file.name}: the browser cannot show this file; the 8-bit rendering ` +
      "the model sees appears after segmenting.");
  }
});

$("preview").addEventListener("error", () => {
  if (!$("preview").hidden && $("preview").src.startsWith("blob:")) {
    showPreview("", "The browser cannot show this image (e.g. 16-bit or multi-band); the " +
      "8-bit rendering the model sees appears after segmenting.");
  }
});

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  const text = $("text").value.trim();
  if (!state.file && !state.example) return showError("Choose an image or an example first.");
  if (!text) return showError("Type an expression, e.g. 'the white ship'.");
  const limitBytes = state.limits ? state.limits.max_upload_mb * 1048576 : Infinity;
  if (state.file && state.file.size > limitBytes) {
    return showError(`The file is larger than ${state.limits.max_upload_mb} MB.`);
  }
  let url = "/api/predict";
  const options = { method: "POST" };
  if (state.example) {
    url += `?text=${encodeURIComponent(text)}&example=${encodeURIComponent(state.example)}`;
  } else {
    const form = new FormData();
    form.append("text", text);
    form.append("image", state.file, state.file.name || "image");
    options.body = form;
  }
  $("submit").disabled = true;
  $("status").textContent = "Segmenting...";
  try {
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new Error("The server closed the connection (upload too large or too slow?).");
    }
    const data = await readAnswer(response);
    if (!response.ok) throw new Error(data.error || `request failed (${response.status})`);
    await showResult(data);
    $("status").textContent = "Done.";
  } catch (err) {
    $("result-panel").hidden = true;
    state.result = null;
    showError(err.message);
  } finally {
    $("submit").disabled = false;
  }
});

// The JSON answer, or an error message for answers that are not JSON (e.g. a proxy's page).
async function readAnswer(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) return response.json();
  const reasons = {
    408: "The upload took too long; try a smaller image or a faster connection.",
    413: "The upload is too large for this demo.",
    503: "The server is busy; try again in a few seconds.",
  };
  return { error: reasons[response.status] || `Unexpected answer from the server (${response.status}).` };
}

async function loadImage(src) {
  const img = new Image();
  img.src = src;
  await img.decode();
  return img;
}

function pixels(img) {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height).data; // RGBA
}

async function showResult(data) {
  const [rendering, probImg] = await Promise.all([
    loadImage(data.image),
    loadImage(data.probabilities),
  ]);
  const width = data.width;
  const height = data.height;
  const rgba = pixels(probImg);
  const probs = new Uint8Array(width * height); // round(255 p), the grey PNG's red channel
  for (let i = 0; i < probs.length; i++) probs[i] = rgba[4 * i];
  // the rendering is every step-th pixel of the image (as the server's overlay)
  const dw = rendering.naturalWidth;
  const dh = rendering.naturalHeight;
  const step = Math.ceil(Math.max(width, height) / Math.max(dw, dh));
  const small = new Uint8Array(dw * dh);
  for (let r = 0; r < dh; r++) {
    for (let c = 0; c < dw; c++) small[r * dw + c] = probs[r * step * width + c * step];
  }
  state.result = {
    data, probs, small, width, height, dw, dh, base: pixels(rendering), maskFor: data.threshold,
  };
  showPreview(data.image, "As the model sees it (the checkpoint's image scaling).");
  $("download").href = data.mask;
  $("result-panel").hidden = false;
  setSlider(data.threshold);
  render();
}

// Python's round (half to even) of 255 t, as Predictor.to_mask, at least 1.
function cutoff(threshold) {
  const x = threshold * 255;
  let r = Math.round(x);
  if (r - x === 0.5 && r % 2 === 1) r -= 1;
  return Math.max(1, r);
}

function setSlider(threshold) {
  $("threshold").value = String(threshold);
  $("threshold-value").textContent = Number(threshold).toFixed(2);
}

function render() {
  const res = state.result;
  if (!res) return;
  const threshold = Number($("threshold").value);
  $("threshold-value").textContent = threshold.toFixed(2);
  const cut = cutoff(threshold);
  const canvas = document.createElement("canvas");
  canvas.width = res.dw;
  canvas.height = res.dh;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(res.dw, res.dh);
  const px = out.data;
  for (let i = 0; i < res.small.length; i++) {
    const on = res.small[i] >= cut;
    for (let k = 0; k < 3; k++) {
      const v = res.base[4 * i + k];
      px[4 * i + k] = on ? Math.floor(0.5 * v + 0.5 * OVERLAY_COLOR[k] + 0.5) : v;
    }
    px[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  $("overlay").src = canvas.toDataURL("image/png");
  let count = 0;
  for (let i = 0; i < res.probs.length; i++) if (res.probs[i] >= cut) count++;
  const top = res.data.max_probability.toFixed(3);
  const size = `${res.width} x ${res.height} px`;
  if (count === 0) {
    $("caption").textContent =
      `"${res.data.text}": no pixel above the threshold ${threshold.toFixed(2)}; ` +
      `highest foreground probability ${top} (${size}).`;
  } else {
    const percent = ((100 * count) / res.probs.length).toFixed(2);
    $("caption").textContent =
      `"${res.data.text}": ${percent}% of ${size} above the threshold ` +
      `${threshold.toFixed(2)}; highest foreground probability ${top}.`;
  }
  $("result-panel").dataset.empty = String(count === 0);
}

// The full-size mask PNG at the slider's threshold (built when the slider is released).
function updateDownload() {
  const res = state.result;
  if (!res) return;
  const threshold = Number($("threshold").value);
  if (threshold === res.maskFor) return;
  const cut = cutoff(threshold);
  const canvas = document.createElement("canvas");
  canvas.width = res.width;
  canvas.height = res.height;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(res.width, res.height);
  for (let i = 0; i < res.probs.length; i++) {
    const v = res.probs[i] >= cut ? 255 : 0;
    out.data[4 * i] = out.data[4 * i + 1] = out.data[4 * i + 2] = v;
    out.data[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  $("download").href = canvas.toDataURL("image/png");
  res.maskFor = threshold;
}

$("threshold").addEventListener("input", render);
$("threshold").addEventListener("change", updateDownload);

loadInfo().catch((err) => showError(`Cannot reach the server: ${err.message}`));
