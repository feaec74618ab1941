// wrel demo page: send the image as a multipart form, show the returned overlay.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, example: null, limits: null };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
  if (message) $("status").textContent = "";
}

function selectExample(example, button) {
  state.example = example.id;
  state.file = null;
  $("file").value = "";
  document.querySelectorAll("#examples button").forEach((b) => b.classList.remove("selected"));
  button.classList.add("selected");
  $("preview").src = `/api/examples/${encodeURIComponent(example.id)}.png`;
  $("preview").hidden = false;
  $("text").value = example.text;
  showError("");
}

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  state.limits = info.limits;
  $("limits").textContent =
    `(up to ${info.limits.max_upload_mb} MB, ${info.limits.max_side} px per side)`;
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
  if (file && file.type.startsWith("image/")) {
    $("preview").src = URL.createObjectURL(file);
    $("preview").hidden = false;
  } else {
    $("preview").hidden = true;
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
    $("overlay").src = data.overlay;
    $("download").href = data.mask;
    const percent = (100 * data.foreground_fraction).toFixed(2);
    $("caption").textContent = `"${data.text}": ${percent}% of ${data.width} x ${data.height} px`;
    $("result-panel").hidden = false;
    $("status").textContent = "Done.";
  } catch (err) {
    $("result-panel").hidden = true;
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

loadInfo().catch((err) => showError(`Cannot reach the server: ${err.message}`));
