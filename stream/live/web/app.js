"use strict";
// FakeWeb Live page: send the webcam, watch annotated video and verdicts, manage RTSP cameras.
// window.fakeweb exposes counters for tests: frames rendered and face messages received.

const state = { framesRendered: 0, faceMessages: 0, lastFaces: [], localPeer: null, viewers: new Map() };
window.fakeweb = state;

const $ = (selector) => document.querySelector(selector);

function showError(message) { $("#error").textContent = message || ""; }

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  if (response.status === 401) { window.location = "/login"; throw new Error("not signed in"); }
  const text = await response.text();
  const body = text ? JSON.parse(text) : {};
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function waitForIce(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (peer.iceGatheringState === "complete") { peer.removeEventListener("icegatheringstatechange", check); resolve(); } };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000);
  });
}

function countFrames(video) {
  if (!video.requestVideoFrameCallback) return;
  const tick = () => { state.framesRendered += 1; video.requestVideoFrameCallback(tick); };
  video.requestVideoFrameCallback(tick);
}

// The score shown is the smoothed one the verdict is decided on (as on the video's label); a face stays "unknown",
// with no score, until it has enough classifier samples (stream/pipeline/scoring.py).
function faceText(face) {
  const score = face.verdict === "unknown" || face.probability === null ? "…" : face.probability.toFixed(2);
  return `#${face.track_id} ${face.verdict} (${score})`;
}

function renderFaces(list, faces) {
  list.replaceChildren(...faces.map((face) => {
    const item = document.createElement("li");
    item.textContent = faceText(face);
    item.className = `verdict-${face.verdict}`;
    return item;
  }));
}

// A face with an open event (judged manipulated now) can be reviewed while it is on screen: one bar under the
// list, rebuilt only when the flagged faces change (the list itself is redrawn on every frame).
function renderReviewBar(list, faces) {
  let bar = list.nextElementSibling;
  if (!bar || !bar.classList.contains("review-bar")) {
    bar = document.createElement("div");
    bar.className = "review-bar";
    list.after(bar);
  }
  const flagged = faces.filter((face) => face.event);
  const key = flagged.map((face) => face.event).join(",");
  if (bar.dataset.events === key) return;
  bar.dataset.events = key;
  bar.replaceChildren(...flagged.map((face) => {
    const item = document.createElement("div");
    item.dataset.event = face.event;
    item.append(`face #${face.track_id}: `);
    for (const [outcome, label] of [["correct", "Manipulated — correct"], ["real", "This face is real"]]) {
      const button = document.createElement("button");
      button.className = `${outcome} secondary`;
      button.textContent = label;
      button.onclick = async () => {
        try {
          await api(`/api/events/${encodeURIComponent(face.event)}/review`, { method: "POST", body: JSON.stringify({ outcome }) });
          item.replaceChildren(`face #${face.track_id}: reviewed as ${outcome === "real" ? "a real face" : "manipulated"}`);
        } catch (e) { showError(e.message); }
      };
      item.append(button, " ");
    }
    return item;
  }));
}

// Face verdicts arrive on a data channel; it closes when the server ends the connection (e.g. on shutdown, or
// when the camera is removed), and then `onClosed` runs.
function listenForFaces(peer, list, onClosed) {
  const channel = peer.createDataChannel("faces");
  channel.onclose = onClosed;
  channel.onmessage = (event) => {
    const message = JSON.parse(event.data);
    state.faceMessages += 1;
    state.lastFaces = message.faces;
    renderFaces(list, message.faces);
    renderReviewBar(list, message.faces);
  };
}

async function negotiate(peer, path) {
  await peer.setLocalDescription(await peer.createOffer());
  await waitForIce(peer);
  const answer = await api(path, { method: "POST", body: JSON.stringify({ sdp: peer.localDescription.sdp, type: "offer" }) });
  await peer.setRemoteDescription(answer);
}

async function startCamera() {
  showError("");
  $("#start").disabled = true;
  try {
    const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    const peer = new RTCPeerConnection();
    state.localPeer = peer;
    listenForFaces(peer, $("#faces"), () => {
      if (state.localPeer !== peer) return;  // stopped here, not by the server
      stopCamera();
      showError("Camera: the server closed the connection");
    });
    media.getTracks().forEach((track) => peer.addTrack(track, media));
    peer.ontrack = (event) => { $("#annotated").srcObject = new MediaStream([event.track]); };
    countFrames($("#annotated"));
    await negotiate(peer, "/api/webrtc/offer");
    $("#stop").disabled = false;
  } catch (error) {
    showError(`Camera: ${error.message}`);
    $("#start").disabled = false;
  }
}

function stopCamera() {
  if (state.localPeer) {
    state.localPeer.getSenders().forEach((sender) => sender.track && sender.track.stop());
    state.localPeer.close();
    state.localPeer = null;
  }
  $("#annotated").srcObject = null;
  $("#start").disabled = false;
  $("#stop").disabled = true;
}

function stopWatching(streamId) {
  const peer = state.viewers.get(streamId);
  if (peer) peer.close();
  state.viewers.delete(streamId);
}

async function watchCamera(streamId, container) {
  stopWatching(streamId);  // a second click restarts the view instead of leaking the first connection
  const peer = new RTCPeerConnection();
  state.viewers.set(streamId, peer);
  peer.addTransceiver("video", { direction: "recvonly" });
  const video = container.querySelector("video");
  peer.ontrack = (event) => { video.srcObject = new MediaStream([event.track]); };
  listenForFaces(peer, container.querySelector("ul"), () => {
    if (state.viewers.get(streamId) !== peer) return;
    stopWatching(streamId);
    video.srcObject = null;
  });
  countFrames(video);
  await negotiate(peer, `/api/streams/${encodeURIComponent(streamId)}/view`);
}

function cameraElement(stream) {
  const element = document.createElement("div");
  element.className = "camera";
  element.dataset.id = stream.id;
  element.innerHTML = `<strong></strong> <span class="status"></span> <span class="fps"></span>
    <button class="watch">Watch</button> <button class="remove secondary">Remove</button>
    <div class="problem"></div><video autoplay playsinline muted></video><ul></ul>`;
  element.querySelector("strong").textContent = stream.name;
  element.querySelector(".watch").onclick = () => watchCamera(stream.id, element).catch((e) => showError(e.message));
  element.querySelector(".remove").onclick = async () => {
    try {
      await api(`/api/streams/${encodeURIComponent(stream.id)}`, { method: "DELETE" });
      stopWatching(stream.id);
      element.remove();
    } catch (e) { showError(e.message); }
  };
  return element;
}

// Why a camera that is down failed last, and when the server tries it again.
function problemText(stream) {
  if (stream.status === "live" || !stream.last_error) return "";
  const seconds = stream.retry_in_seconds;
  return `${stream.last_error} · ${seconds === null ? "retrying now" : `retrying in ${Math.ceil(seconds)} s`}`;
}

function showCamera(element, stream) {
  const status = element.querySelector(".status");
  status.textContent = stream.status;
  status.className = `status status-${stream.status}`;
  element.querySelector(".fps").textContent = `${stream.fps} fps`;
  element.querySelector(".problem").textContent = problemText(stream);
  if (stream.status !== "live") {  // a camera down shows no faces
    renderFaces(element.querySelector("ul"), []);
    renderReviewBar(element.querySelector("ul"), []);
  }
}

async function refreshCameras() {
  try {
    const { streams, elsewhere = [] } = await api("/api/streams");
    const list = $("#camera-list");
    // Cameras other replicas run (docs/kubernetes.md): their details come through this replica, forwarded.
    const others = await Promise.allSettled(elsewhere.map((camera) => api(`/api/streams/${encodeURIComponent(camera.id)}`)));
    const forwarded = others.filter((result) => result.status === "fulfilled").map((result) => result.value);
    const cameras = [...streams, ...forwarded].filter((stream) => stream.kind === "camera");
    const ids = new Set(cameras.map((stream) => stream.id));
    list.querySelectorAll(".camera").forEach((element) => {
      if (!ids.has(element.dataset.id)) { stopWatching(element.dataset.id); element.remove(); }
    });
    for (const stream of cameras) {
      let element = list.querySelector(`.camera[data-id="${CSS.escape(stream.id)}"]`);
      if (!element) { element = cameraElement(stream); list.appendChild(element); }
      showCamera(element, stream);
    }
  } catch (error) { showError(`Cameras: ${error.message}`); }
}

async function refreshModel() {
  try {
    const response = await fetch("/readyz");
    const body = await response.json();
    const model = body.model || {};
    // The threshold the faces' scores are compared with: "manipulated" needs a score at or above it.
    const threshold = typeof model.threshold === "number" ? ` · threshold ${model.threshold.toPrecision(2)}` : "";
    $("#model").textContent = `model ${model.version || "none"} · ${model.backend || "?"} on ${model.device || "?"}${threshold}`;
  } catch (error) { $("#model").textContent = "model: unavailable"; }
}

$("#start").onclick = startCamera;
$("#stop").onclick = stopCamera;
$("#add-camera").onsubmit = async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  try {
    await api("/api/streams", { method: "POST", body: JSON.stringify({ name: form.get("name"), url: form.get("url") }) });
    event.target.reset();
    showError("");
    refreshCameras();
  } catch (error) { showError(`Add camera: ${error.message}`); }
};

// Close peers when the page goes away: the server then frees the viewer at once instead of after ICE consent
// expires (about 30 s later), and a browser stream stops being processed.
window.addEventListener("pagehide", () => {
  if (state.localPeer) state.localPeer.close();
  state.viewers.forEach((peer) => peer.close());
});

// Events: newest first, a thumbnail of the annotated snapshot and the crops the model judged (click to open),
// and the operator's review: "manipulated — correct" or "this face is real".
function eventElement(event) {
  const element = document.createElement("div");
  element.className = "event";
  element.dataset.id = event.id;
  element.innerHTML = `<img class="snapshot" alt="snapshot"><div class="crops"></div><div class="meta">
    <div class="title"></div><div class="times"></div><div class="review">
    <button class="correct">Manipulated — correct</button> <button class="real secondary">This face is real</button>
    </div><div class="reviewed"></div></div>`;
  return element;
}

function showEvent(element, event) {
  const snapshot = element.querySelector(".snapshot");
  if (event.snapshot && snapshot.getAttribute("src") !== event.snapshot) snapshot.src = event.snapshot;
  snapshot.onclick = () => window.open(event.snapshot, "_blank");
  const crops = element.querySelector(".crops");
  if (crops.childElementCount !== event.crops.length) {
    crops.replaceChildren(...event.crops.map((url) => {
      const image = document.createElement("img");
      image.src = url; image.alt = "face crop"; image.onclick = () => window.open(url, "_blank");
      return image;
    }));
  }
  const title = element.querySelector(".title");
  title.textContent = `${event.stream} · face #${event.track_id} · ${event.verdict} · peak ${event.peak_score.toFixed(2)} · ${event.status}`;
  title.className = `title verdict-${event.verdict}`;
  const started = new Date(event.started_at).toLocaleString();
  element.querySelector(".times").textContent = event.ended_at ? `${started} → ${new Date(event.ended_at).toLocaleTimeString()}` : `${started} →`;
  element.querySelector(".reviewed").textContent = event.review ? `reviewed: ${event.review.outcome === "real" ? "a real face" : "manipulated"}` : "";
  for (const outcome of ["correct", "real"]) {
    element.querySelector(`.${outcome}`).onclick = async () => {
      try {
        showEvent(element, await api(`/api/events/${encodeURIComponent(event.id)}/review`, { method: "POST", body: JSON.stringify({ outcome }) }));
      } catch (e) { showError(e.message); }
    };
  }
}

async function refreshEvents() {
  try {
    const stream = $("#event-stream").value;
    const { events } = await api(`/api/events?limit=30${stream ? `&stream=${encodeURIComponent(stream)}` : ""}`);
    const list = $("#event-list");
    const ids = new Set(events.map((event) => event.id));
    list.querySelectorAll(".event").forEach((element) => { if (!ids.has(element.dataset.id)) element.remove(); });
    events.forEach((event, index) => {
      let element = list.querySelector(`.event[data-id="${CSS.escape(event.id)}"]`);
      if (!element) element = eventElement(event);
      if (list.children[index] !== element) list.insertBefore(element, list.children[index] || null);
      showEvent(element, event);
    });
    const choice = $("#event-stream");
    const known = new Set([...choice.options].map((option) => option.value));
    for (const event of events) {
      if (!known.has(event.stream)) { choice.add(new Option(event.stream, event.stream)); known.add(event.stream); }
    }
  } catch (error) { if (!String(error.message).includes("events are off")) showError(`Events: ${error.message}`); }
}

$("#event-stream").onchange = refreshEvents;

refreshModel();
refreshCameras();
refreshEvents();
setInterval(refreshCameras, 2000);
setInterval(refreshModel, 10000);
setInterval(refreshEvents, 5000);
