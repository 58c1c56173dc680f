// The spk serve web page: plain JS over the v1 API, no build step and nothing fetched from elsewhere.
//
// The operator's key stays in this tab's sessionStorage and goes out only as an Authorization header.
// Microphone audio is captured as PCM with the Web Audio API (an AudioWorklet) and sent as a 16-bit mono
// WAV at the capture rate: MediaRecorder would give WebM/Opus, which the server refuses (WAV, FLAC and Ogg
// only); the server resamples.
"use strict";

const KEY_STORAGE = "spk.apiKey";
const $ = (id) => document.getElementById(id);

// --- the API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

// What an error status means for the person at the page, shown under the server's own message. The server's
// messages for unusable audio (413, 415, 422) say it all already.
const STATUS_HINTS = {
  401: "The key was refused (missing, wrong or revoked): paste a valid key above.",
  403: "This key's scope does not allow this (enrolling, listing and deleting speakers need an admin key).",
  429: "Too many requests with this key.",
  503: "The server is busy or not ready.",
};

async function api(method, path, body) {
  const headers = {};
  const key = storedKey();
  if (key) headers["Authorization"] = "Bearer " + key;
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, "Could not reach the server (" + error.message + ").");
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    let message = data && typeof data.error === "string" ? data.error : (text || response.statusText).slice(0, 300);
    throw new ApiError(response.status, message, response.headers.get("Retry-After"));
  }
  return data;
}

// "HTTP 413: <the server's message> (<what it means>)", shown in the section and in the message list.
function describeError(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  if (error.status === 0) return error.message;
  let text = "HTTP " + error.status + ": " + error.message;
  const hint = STATUS_HINTS[error.status];
  if (hint) text += "\n" + hint;
  if (error.retryAfter && (error.status === 429 || error.status === 503)) {
    text += " Try again in " + error.retryAfter + " s.";
  }
  return text;
}

function showError(section, error) {
  const text = describeError(error);
  const box = $(section + "-error");
  box.textContent = text;
  box.hidden = false;
  const item = document.createElement("li");
  item.className = "error";
  item.textContent = new Date().toLocaleTimeString() + " " + section + ": " + text;
  const list = $("messages");
  list.prepend(item);
  while (list.children.length > 20) list.lastElementChild.remove();
}

function clearError(section) {
  const box = $(section + "-error");
  box.textContent = "";
  box.hidden = true;
}

function fmt(value, digits) {
  return value === null || value === undefined || Number.isNaN(value) ? "n/a" : Number(value).toFixed(digits);
}

// --- microphone capture -------------------------------------------------------------------------------

// Sums the input's channels into one and hands the samples over in blocks of 4096 (about 85 ms at 48 kHz).
const TAP_WORKLET = `
class SpkTap extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(4096);
    this.filled = 0;
    this.port.onmessage = () => {
      this.port.postMessage(this.block.slice(0, this.filled));
      this.filled = 0;
    };
  }
  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const channels = input.length;
      const frames = input[0].length;
      for (let i = 0; i < frames; i++) {
        let sum = 0;
        for (let c = 0; c < channels; c++) sum += input[c][i];
        this.block[this.filled++] = sum / channels;
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block);
          this.block = new Float32Array(4096);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor("spk-tap", SpkTap);
`;

let tapModuleUrl = null;

// One recording: getUserMedia, an AudioContext at the device's rate and the tap; ends after `seconds`
// or at stop(); resolves to {blob, seconds, rate}.
class Recording {
  constructor(seconds, onProgress) {
    this.seconds = seconds;
    this.onProgress = onProgress;
    this.chunks = [];
    this.samples = 0;
    this.finished = false;
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("The browser gives no microphone here: it does so only on https:// pages or on " +
        "http://localhost. Use a file instead, or open the page over HTTPS.");
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      video: false,
    });
    try {
      this.context = new AudioContext();
      if (this.context.state === "suspended") await this.context.resume();
      if (!tapModuleUrl) tapModuleUrl = URL.createObjectURL(new Blob([TAP_WORKLET], { type: "text/javascript" }));
      await this.context.audioWorklet.addModule(tapModuleUrl);
      this.rate = this.context.sampleRate;
      this.target = Math.round(this.seconds * this.rate);
      this.source = this.context.createMediaStreamSource(this.stream);
      this.tap = new AudioWorkletNode(this.context, "spk-tap", { numberOfInputs: 1, numberOfOutputs: 1 });
      // a silent path to the output keeps the graph pulled (and the tap running) in every browser
      this.mute = this.context.createGain();
      this.mute.gain.value = 0;
      this.source.connect(this.tap).connect(this.mute).connect(this.context.destination);
    } catch (error) {
      this.release();
      throw error;
    }
    this.done = new Promise((resolve) => { this.resolve = resolve; });
    this.tap.port.onmessage = (event) => this.take(event.data);
    return this.done;
  }

  take(block) {
    if (this.finished) return;
    const wanted = Math.min(block.length, this.target - this.samples);
    if (wanted > 0) {
      this.chunks.push(block.slice(0, wanted));
      this.samples += wanted;
    }
    let power = 0;
    for (let i = 0; i < block.length; i++) power += block[i] * block[i];
    const rms = Math.sqrt(power / Math.max(block.length, 1));
    const db = rms > 0 ? Math.max(-60, 20 * Math.log10(rms)) : -60;
    this.onProgress(this.samples / this.rate, db);
    if (this.samples >= this.target || this.stopping) this.finish();
  }

  // Stop early: the tap hands over what it holds and the recording ends with it.
  stop() {
    if (this.finished || !this.tap) return;
    this.stopping = true;
    this.tap.port.postMessage("flush");
  }

  // The microphone is let go (its indicator goes off) and the audio graph closed.
  release() {
    this.stream.getTracks().forEach((track) => track.stop());
    if (this.context) this.context.close();
  }

  finish() {
    this.finished = true;
    this.source.disconnect();
    this.tap.disconnect();
    this.release();
    this.resolve({ blob: encodeWav(this.chunks, this.samples, this.rate), seconds: this.samples / this.rate,
                   rate: this.rate });
  }
}

// 16-bit PCM mono WAV (RIFF, little-endian) of float samples in [-1, 1].
function encodeWav(chunks, samples, rate) {
  const buffer = new ArrayBuffer(44 + samples * 2);
  const view = new DataView(buffer);
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i++) view.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  view.setUint32(4, 36 + samples * 2, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true); // bytes per second
  view.setUint16(32, 2, true); // bytes per frame
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, samples * 2, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i++) {
      const s = Math.max(-1, Math.min(1, chunk[i]));
      view.setInt16(offset, s < 0 ? s * 0x8000 : s * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([buffer], { type: "audio/wav" });
}

// --- one audio source (microphone or file) per form ------------------------------------------------------

const recorded = {}; // section -> {blob, seconds, rate} of its last recording
const active = {}; // section -> the Recording in progress

function useMic(section) {
  return $(section + "-use-mic").checked;
}

function setupSource(section) {
  const micPanel = $(section + "-mic-panel");
  const filePanel = $(section + "-file-panel");
  const toggle = () => {
    micPanel.hidden = !useMic(section);
    filePanel.hidden = useMic(section);
  };
  $(section + "-use-mic").addEventListener("change", toggle);
  $(section + "-use-file").addEventListener("change", toggle);
  toggle();
  $(section + "-record").addEventListener("click", () => record(section));
  $(section + "-stop").addEventListener("click", () => active[section] && active[section].stop());
}

function showLevel(section, seconds, total, db) {
  const meter = $(section + "-level");
  meter.setAttribute("aria-valuenow", db.toFixed(0));
  meter.firstElementChild.style.width = ((db + 60) / 60 * 100).toFixed(1) + "%";
  meter.classList.toggle("loud", db > -3);
  $(section + "-timer").textContent = seconds.toFixed(1) + " / " + total + " s";
}

async function record(section) {
  const seconds = Number($(section + "-seconds").value);
  if (!(seconds >= 1 && seconds <= 120)) {
    showError(section, new Error("Seconds to record: give a number from 1 to 120."));
    return;
  }
  clearError(section);
  const status = $(section + "-recording");
  const recordButton = $(section + "-record");
  const stopButton = $(section + "-stop");
  const recording = new Recording(seconds, (done, db) => showLevel(section, done, seconds, db));
  active[section] = recording;
  recordButton.disabled = true;
  stopButton.disabled = false;
  $(section + "-submit").disabled = true;
  status.textContent = "Recording\u2026";
  status.dataset.state = "recording";
  try {
    const result = await recording.start();
    recorded[section] = result;
    const playback = $(section + "-playback");
    if (playback.src) URL.revokeObjectURL(playback.src);
    playback.src = URL.createObjectURL(result.blob);
    playback.hidden = false;
    status.textContent = "Recorded " + result.seconds.toFixed(1) + " s at " + result.rate + " Hz.";
    status.dataset.state = "recorded";
  } catch (error) {
    status.textContent = "Not recorded.";
    status.dataset.state = "failed";
    const name = error && error.name;
    showError(section, name === "NotAllowedError"
      ? new Error("The microphone was not allowed: allow it for this page in the browser and record again.")
      : name === "NotFoundError" ? new Error("No microphone was found: use a file instead.") : error);
  } finally {
    delete active[section];
    recordButton.disabled = false;
    stopButton.disabled = true;
    $(section + "-submit").disabled = false;
  }
}

// The audio of a form as multipart `audio` parts; null (with a message) when there is none.
function appendAudio(section, form) {
  if (useMic(section)) {
    const clip = recorded[section];
    if (!clip) {
      showError(section, new Error("Record something first (or choose File)."));
      return false;
    }
    form.append("audio", clip.blob, "microphone-" + section + ".wav");
    return true;
  }
  const files = $(section + "-file").files;
  if (!files.length) {
    showError(section, new Error("Choose an audio file first (or choose Microphone)."));
    return false;
  }
  for (const file of files) form.append("audio", file, file.name);
  return true;
}

// Runs a form's request; its result box says data-state="pending", then "done" or "failed" (for tests).
function forgetAudio(section) {
  delete recorded[section];
  const playback = $(section + "-playback");
  if (playback.src) URL.revokeObjectURL(playback.src);
  playback.removeAttribute("src");
  playback.hidden = true;
  showLevel(section, 0, 0, -60);
  $(section + "-recording").textContent = "Nothing recorded yet.";
  $(section + "-recording").dataset.state = "";
  $(section + "-file").value = "";
}

async function submitting(section, work) {
  const button = $(section + "-submit");
  const result = $(section + "-result");
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  result.dataset.state = "pending";
  clearError(section);
  try {
    await work();
    result.dataset.state = "done";
  } catch (error) {
    result.dataset.state = "failed";
    showError(section, error);
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

// --- the forms -------------------------------------------------------------------------------------------

async function enroll(event) {
  event.preventDefault();
  const speaker = $("enroll-speaker").value.trim();
  const result = $("enroll-result");
  result.textContent = "";
  result.className = "result";
  if (!speaker) return showError("enroll", new Error("Give the speaker a name."));
  const form = new FormData();
  form.append("speaker", speaker);
  if (!appendAudio("enroll", form)) return;
  await submitting("enroll", async () => {
    result.textContent = "Enrolling\u2026";
    try {
      const data = await api("POST", "/v1/enroll", form);
      result.textContent = "Enrolled " + data.speaker + ": " + data.added + " recording(s) added, " +
        data.utterances + " in total.";
      result.className = "result ok";
      forgetAudio("enroll"); // the next speaker is not enrolled with this one's audio by mistake
      refreshSpeakers();
      refreshReady();
    } catch (error) {
      result.textContent = "";
      throw error;
    }
  });
}

// The score on a bar centred on the threshold, wide enough to show the score's distance from it: half a
// width of 0.05, 0.1, 0.2, 0.5 or 1 (the smallest over 1.25 times the distance), moved within [-1, 1].
function gaugeRange(score, threshold) {
  const distance = Math.abs(score - threshold);
  const half = [0.05, 0.1, 0.2, 0.5, 1, 2].find((step) => step >= 1.25 * distance) || 2;
  let low = threshold - half;
  let high = threshold + half;
  if (low < -1) { high += -1 - low; low = -1; }
  if (high > 1) { low -= high - 1; high = 1; }
  const tidy = (value) => Math.round(value * 1000) / 1000 + 0; // + 0: no "-0.00"
  return [tidy(Math.max(low, -1)), tidy(Math.min(high, 1))];
}

function drawGauge(score, threshold, accept) {
  const [low, high] = gaugeRange(score, threshold);
  const at = (value) => Math.max(0, Math.min(100, (value - low) / (high - low) * 100));
  const bar = $("verify-gauge-bar");
  bar.style.width = at(score).toFixed(1) + "%";
  bar.className = "gauge-bar " + (accept ? "accept" : "reject");
  const mark = $("verify-gauge-threshold");
  mark.style.left = at(threshold).toFixed(1) + "%";
  // the label stays inside the gauge when the threshold is near one of its ends
  mark.classList.toggle("near-low", at(threshold) < 12);
  mark.classList.toggle("near-high", at(threshold) > 88);
  mark.dataset.label = "threshold " + fmt(threshold, 3);
  $("verify-gauge-min").textContent = fmt(low, 2);
  $("verify-gauge-max").textContent = fmt(high, 2);
  $("verify-gauge").setAttribute("aria-label", "score " + fmt(score, 3) + " against the threshold " +
    fmt(threshold, 3) + " on a scale from " + fmt(low, 2) + " to " + fmt(high, 2));
}

async function verify(event) {
  event.preventDefault();
  const speaker = $("verify-speaker").value.trim();
  $("verify-outcome").hidden = true;
  if (!speaker) return showError("verify", new Error("Give the claimed speaker."));
  const form = new FormData();
  form.append("speaker", speaker);
  const threshold = $("verify-threshold").value.trim();
  const operatingPoint = $("verify-operating-point").value.trim();
  if (threshold) form.append("threshold", threshold);
  else if (operatingPoint) form.append("operating_point", operatingPoint);
  if (!appendAudio("verify", form)) return;
  await submitting("verify", async () => {
    const data = await api("POST", "/v1/verify", form);
    const decision = $("verify-decision");
    decision.textContent = data.accept ? "ACCEPT" : "REJECT";
    decision.className = "decision " + (data.accept ? "accept" : "reject");
    $("verify-claim").textContent = "claim: " + data.speaker;
    $("verify-score").textContent = fmt(data.score, 4);
    $("verify-threshold-value").textContent = fmt(data.threshold, 4);
    $("verify-operating-point-value").textContent = data.operating_point || "(threshold given)";
    $("verify-llr").textContent = data.llr === null || data.llr === undefined
      ? "n/a (the model has no calibration)" : fmt(data.llr, 3);
    $("verify-duration").textContent = data.duration_s === undefined ? "n/a" : fmt(data.duration_s, 2) + " s";
    drawGauge(data.score, data.threshold, data.accept);
    $("verify-outcome").hidden = false;
  });
}

async function identify(event) {
  event.preventDefault();
  const answer = $("identify-answer");
  const table = $("identify-candidates");
  answer.textContent = "";
  table.hidden = true;
  const form = new FormData();
  const topK = $("identify-top-k").value.trim();
  const unknown = $("identify-unknown-threshold").value.trim();
  if (topK) form.append("top_k", topK);
  if (unknown) form.append("unknown_threshold", unknown);
  if (!appendAudio("identify", form)) return;
  await submitting("identify", async () => {
    const data = await api("POST", "/v1/identify", form);
    answer.textContent = data.unknown
      ? "Unknown speaker (no candidate above " + fmt(data.unknown_threshold, 3) + ")."
      : "Best match: " + data.speaker;
    answer.dataset.speaker = data.speaker;
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const candidate of data.candidates || []) {
      const row = body.insertRow();
      row.insertCell().textContent = candidate.speaker;
      row.insertCell().textContent = fmt(candidate.probability, 3);
      row.insertCell().textContent = fmt(candidate.score, 4);
      row.insertCell().textContent = fmt(candidate.llr, 3);
    }
    table.hidden = !(data.candidates || []).length;
  });
}

function formatTime(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return new Date(value * 1000).toISOString().replace("T", " ").slice(0, 19);
  return String(value).replace("T", " ").slice(0, 19);
}

async function refreshSpeakers() {
  const status = $("speakers-status");
  const table = $("speakers-table");
  clearError("speakers");
  status.textContent = "Loading\u2026";
  status.dataset.state = "loading";
  let data;
  try {
    data = await api("GET", "/v1/speakers");
  } catch (error) {
    status.textContent = "";
    status.dataset.state = "failed";
    table.hidden = true;
    showError("speakers", error);
    return;
  }
  const speakers = data.speakers || [];
  const body = $("speakers-body");
  body.replaceChildren();
  const names = $("speaker-names");
  names.replaceChildren();
  for (const entry of speakers) {
    const row = body.insertRow();
    row.dataset.speaker = entry.speaker;
    row.insertCell().textContent = entry.speaker;
    row.insertCell().textContent = entry.utterances;
    row.insertCell().textContent = entry.duration_s === undefined ? "" : fmt(entry.duration_s, 1) + " s";
    row.insertCell().textContent = formatTime(entry.updated);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "delete";
    button.textContent = "Delete";
    button.dataset.speaker = entry.speaker;
    button.setAttribute("aria-label", "Delete speaker " + entry.speaker);
    button.addEventListener("click", () => deleteSpeaker(button));
    row.insertCell().append(button);
    const option = document.createElement("option");
    option.value = entry.speaker;
    names.append(option);
  }
  table.hidden = speakers.length === 0;
  status.dataset.state = "loaded";
  status.textContent = speakers.length === 0 ? "No speaker enrolled yet."
    : speakers.length + " speaker" + (speakers.length === 1 ? "" : "s") + " enrolled.";
}

// Two clicks: the first asks for confirmation (for 5 s), the second deletes.
async function deleteSpeaker(button) {
  const speaker = button.dataset.speaker;
  if (button.dataset.confirm !== "yes") {
    button.dataset.confirm = "yes";
    button.textContent = "Really delete " + speaker + "?";
    button.classList.add("confirm");
    setTimeout(() => {
      if (button.isConnected && button.dataset.confirm === "yes") {
        button.dataset.confirm = "";
        button.textContent = "Delete";
        button.classList.remove("confirm");
      }
    }, 5000);
    return;
  }
  button.disabled = true;
  try {
    const data = await api("DELETE", "/v1/speakers/" + encodeURIComponent(speaker));
    $("speakers-status").textContent = "Deleted " + data.speaker + " (" + data.removed_utterances + " utterance(s)).";
    await refreshSpeakers();
    $("speakers-status").textContent = "Deleted " + data.speaker + ". " + $("speakers-status").textContent;
    refreshReady();
  } catch (error) {
    button.disabled = false;
    showError("speakers", error);
  }
}

// --- the key and the server's state ------------------------------------------------------------------

async function refreshReady() {
  const status = $("server-status");
  try {
    const data = await api("GET", "/v1/ready");
    status.textContent = "Server ready: model " + data.model + ", " + data.speakers + " speaker(s) enrolled.";
    status.dataset.state = "ready";
  } catch (error) {
    status.textContent = "Server not ready: " + describeError(error);
    status.dataset.state = "not-ready";
  }
}

// Which scope the key has, found with the one admin-only read (the speaker list).
async function checkKey() {
  const status = $("key-status");
  if (!storedKey()) {
    status.textContent = "No key yet.";
    status.dataset.state = "none";
    return;
  }
  status.textContent = "Checking the key\u2026";
  try {
    await api("GET", "/v1/speakers");
    status.textContent = "Key in use (admin scope: everything on this page).";
    status.dataset.state = "admin";
    refreshSpeakers();
  } catch (error) {
    $("speakers-body").replaceChildren();
    $("speakers-table").hidden = true;
    $("speakers-status").textContent = "";
    if (error.status === 403) {
      status.textContent = "Key in use (verify scope: verify and identify only).";
      status.dataset.state = "verify";
      $("speakers-status").textContent = "Listing the speakers needs an admin key.";
    } else {
      status.textContent = "Key not usable: " + describeError(error);
      status.dataset.state = "refused";
      if (error.status === 401) {  // a refused key is not kept
        sessionStorage.removeItem(KEY_STORAGE);
        $("api-key").placeholder = "spk_\u2026";
      }
    }
  }
}

function setupKey() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    $("api-key").placeholder = key ? "(key stored for this tab)" : "spk_\u2026";
    checkKey();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").placeholder = "spk_\u2026";
    $("speakers-body").replaceChildren();
    $("speakers-table").hidden = true;
    checkKey();
  });
  if (storedKey()) $("api-key").placeholder = "(key stored for this tab)";
}

function main() {
  setupKey();
  for (const section of ["enroll", "verify", "identify"]) setupSource(section);
  $("enroll-form").addEventListener("submit", enroll);
  $("verify-form").addEventListener("submit", verify);
  $("identify-form").addEventListener("submit", identify);
  $("speakers-refresh").addEventListener("click", refreshSpeakers);
  refreshReady();
  checkKey();
}

main();
