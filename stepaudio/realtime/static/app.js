// Browser client of `stepaudio serve-realtime`: microphone -> AudioWorklet -> PCM16 16 kHz frames over
// the WebSocket; JSON events -> state indicator, transcript, reply text, latency; PCM16 22.05 kHz
// audio -> scheduled playback.  The connection is shown apart from the conversation state and comes
// back by itself (backoff 1, 2, 4, 8, 10 s) while Start is in force; Stop ends it.  Everything
// observable is mirrored in `window.realtime` (tests read it).
"use strict";

const MAX_LOG_LINES = 500;
const RECONNECT_DELAYS_S = [1, 2, 4, 8, 10]; // then 10 s for every further attempt
const FRAME_SAMPLES = 512;
// The page's scripts sit beside this one (/static/ or, in a bigger app, /realtime/static/); the WebSocket
// is always /ws on the same host.
const STATIC_BASE = new URL(".", document.currentScript.src);
const WEBSOCKET_PATH = "/ws";

const realtime = {
  status: "idle", // idle | connecting | running | reconnecting | closed | failed
  connection: "idle", // idle | connecting | connected | reconnecting | disconnected
  reconnectIn: null, // seconds until the next attempt while reconnecting
  reconnects: 0, // reconnection attempts made since Start
  connects: 0, // sessions started (the server's "started" event) since the page loaded
  lastClose: null, // {code, reason} of the last connection that ended
  state: "idle",
  framesSent: 0,
  chunksReceived: 0,
  chunksPlayed: 0,
  secondsPlayed: 0,
  transcripts: [],
  replyText: "",
  latencies: [],
  errors: [],
  logLines: 0,
  logFollowing: true,
  outputSampleRate: 22050,
};
window.realtime = realtime;

let wanted = false; // the user pressed Start and not Stop: keep (re)connecting
let socket = null;
let sessionStarted = false; // the server accepted this connection's "start"
let captureContext = null;
let playbackContext = null;
let microphone = null;
let capture = null;
let nextPlayTime = 0;
let playing = [];
let pendingAudioHeader = null;
let replyTurn = null; // turn of the reply being played
let replySources = []; // {start, duration} of its scheduled chunks (playback context time)
let playbackReporter = null;
let reconnectTimer = null;
let countdownTimer = null;
let failedAttempts = 0; // connections in a row that ended before their session started
let fatalError = null; // an error retrying cannot fix (the server's settings do not fit its models)
let replyLine = null;

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------------------------------------ log
function logAtBottom(log) {
  return log.scrollHeight - log.scrollTop - log.clientHeight < 8;
}

function followLog() {
  const log = $("log");
  while (log.childElementCount > MAX_LOG_LINES) {
    const first = log.firstElementChild;
    const height = first.offsetHeight;
    log.removeChild(first);
    if (!realtime.logFollowing) log.scrollTop = Math.max(0, log.scrollTop - height); // keep the view still
  }
  realtime.logLines = log.childElementCount;
  if (realtime.logFollowing) log.scrollTop = log.scrollHeight;
}

function logLine(text, cls) {
  const line = document.createElement("p");
  line.className = cls || "";
  line.textContent = text;
  $("log").appendChild(line);
  followLog();
  return line;
}
realtime.log = logLine; // for tests and the console (JSON.stringify leaves functions out)

$("log").addEventListener("scroll", () => {
  realtime.logFollowing = logAtBottom($("log")); // scrolled up: stop following until back at the bottom
});

// --------------------------------------------------------------------------------------- indicators
function showState(state) {
  realtime.state = state;
  $("state").textContent = state.replace("_", " ");
  $("state").className = `pill ${state}`;
}

function showConnection(connection, detail) {
  realtime.connection = connection;
  const words = {
    idle: "not started",
    connecting: "connecting",
    connected: "connected",
    reconnecting: `reconnecting in ${realtime.reconnectIn} s`,
    disconnected: "disconnected",
  };
  $("connection").textContent = words[connection] + (detail ? ` (${detail})` : "");
  $("connection").className = `pill ${connection}`;
  updateButtons();
}

function updateButtons() {
  // Start: begins a conversation, or while waiting to reconnect, retries at once.  Stop: ends it (and
  // cancels reconnecting).  Neither is ever disabled for a connection problem.
  const reconnecting = realtime.connection === "reconnecting";
  $("start").disabled = wanted && !reconnecting;
  $("start").textContent = reconnecting ? "Reconnect now" : "Start";
  $("stop").disabled = !wanted;
}

// ---------------------------------------------------------------------------------------- playback
function stopPlayback() {
  for (const source of playing) {
    try { source.stop(); } catch (error) { /* already stopped */ }
  }
  playing = [];
  nextPlayTime = 0;
  replySources = [];
  replyTurn = null;
  pendingAudioHeader = null;
  replyLine = null;
}

function secondsOfReplyPlayed() {
  const now = playbackContext.currentTime;
  return replySources.reduce((sum, s) => sum + Math.min(Math.max(now - s.start, 0), s.duration), 0);
}

function reportPlayback() {
  // Tells the server how much of the reply was heard, so a barge-in keeps exactly that in the history.
  if (replyTurn === null || !sessionStarted || !socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: "playback", turn: replyTurn, played_s: secondsOfReplyPlayed() }));
}

function playPcm16(buffer) {
  const pcm = new Int16Array(buffer);
  const rate = pendingAudioHeader ? pendingAudioHeader.sample_rate : realtime.outputSampleRate;
  pendingAudioHeader = null;
  realtime.chunksReceived += 1;
  if (pcm.length === 0 || !playbackContext) return;
  const audio = playbackContext.createBuffer(1, pcm.length, rate);
  const samples = audio.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
  const source = playbackContext.createBufferSource();
  source.buffer = audio;
  source.connect(playbackContext.destination);
  const start = Math.max(playbackContext.currentTime + 0.02, nextPlayTime);
  nextPlayTime = start + audio.duration;
  replySources.push({ start, duration: audio.duration });
  source.onended = () => {
    realtime.chunksPlayed += 1;
    realtime.secondsPlayed += audio.duration;
    playing = playing.filter((s) => s !== source);
  };
  playing.push(source);
  source.start(start);
}

// ------------------------------------------------------------------------------------------ events
function handleEvent(event) {
  switch (event.type) {
    case "ready":
      realtime.outputSampleRate = event.output_sample_rate;
      break;
    case "started":
      sessionStarted = true;
      failedAttempts = 0;
      realtime.connects += 1;
      realtime.status = "running";
      showState("silence");
      showConnection("connected");
      if (realtime.connects > 1) logLine(`reconnected (session ${event.session})`, "info");
      break;
    case "state":
      showState(event.state);
      if (event.state === "bot_replying") {
        replyLine = logLine("", "bot");
        replyTurn = event.turn;
        replySources = [];
      } else {
        replyTurn = null;
      }
      break;
    case "transcript":
      realtime.transcripts.push(event.text);
      logLine(`you (turn ${event.turn}): ${event.text}`, "user");
      break;
    case "reply_text":
      realtime.replyText += event.text;
      if (!replyLine) replyLine = logLine("", "bot");
      replyLine.textContent += event.text;
      followLog();
      break;
    case "audio":
      pendingAudioHeader = event; // the PCM16 samples follow as one binary message
      break;
    case "barge_in":
      stopPlayback();
      logLine(`(interrupted; kept: ${event.played_text})`, "bot");
      break;
    case "metrics":
      if (event.end_of_speech_to_first_audio_s !== null) {
        realtime.latencies.push(event.end_of_speech_to_first_audio_s);
        $("latency").textContent = `${Math.round(event.end_of_speech_to_first_audio_s * 1000)} ms`;
      }
      break;
    case "error":
      realtime.errors.push(event);
      logLine(`error ${event.code}: ${event.message}`, "error");
      if (event.code === "bad_config") fatalError = event; // retrying with the same settings cannot help
      break;
    default:
      break;
  }
}

// -------------------------------------------------------------------------------------- connection
function clearReconnect() {
  if (reconnectTimer !== null) clearTimeout(reconnectTimer);
  if (countdownTimer !== null) clearInterval(countdownTimer);
  reconnectTimer = countdownTimer = null;
  realtime.reconnectIn = null;
}

function scheduleReconnect(reason) {
  const delay = RECONNECT_DELAYS_S[Math.min(failedAttempts, RECONNECT_DELAYS_S.length - 1)];
  failedAttempts += 1;
  realtime.status = "reconnecting";
  realtime.reconnectIn = delay;
  showConnection("reconnecting", reason);
  countdownTimer = setInterval(() => {
    realtime.reconnectIn = Math.max(0, realtime.reconnectIn - 1);
    showConnection("reconnecting", reason);
  }, 1000);
  reconnectTimer = setTimeout(() => {
    clearReconnect();
    realtime.reconnects += 1;
    connect();
  }, delay * 1000);
}

function connectionLost(closeEvent) {
  // The server went away (or never answered): no reply can go on, so playback and the conversation
  // state are reset; the microphone keeps running and its frames are dropped until the next session.
  socket = null;
  sessionStarted = false;
  realtime.lastClose = { code: closeEvent.code, reason: closeEvent.reason };
  stopPlayback();
  showState("idle");
  if (!wanted) return;
  const reason = closeEvent.reason || `code ${closeEvent.code}`;
  if (fatalError !== null) {
    wanted = false;
    realtime.status = "failed";
    teardownAudio();
    showConnection("disconnected", fatalError.code);
    logLine(`disconnected: ${fatalError.message}; not retrying (the server's settings must change)`, "error");
    return;
  }
  logLine(`connection lost (${reason}); reconnecting`, "error");
  scheduleReconnect(reason);
}

function connect() {
  clearReconnect();
  fatalError = null;
  if (socket) { // never two connections at once
    const old = socket;
    socket = null;
    old.close(1000, "reconnecting");
  }
  sessionStarted = false;
  realtime.status = "connecting";
  showConnection("connecting");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${WEBSOCKET_PATH}`);
  socket = ws;
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "start", sample_rate: 16000, format: "pcm16" }));
  };
  ws.onmessage = (message) => {
    if (ws !== socket) return; // a connection given up on
    if (typeof message.data === "string") handleEvent(JSON.parse(message.data));
    else playPcm16(message.data);
  };
  ws.onclose = (closeEvent) => {
    if (ws === socket) connectionLost(closeEvent);
  };
  ws.onerror = () => {
    /* the close event follows and says what to do */
  };
}

function sendFrame(message) {
  // Frames go out only while a session is running (audio before "start" would be refused).
  if (sessionStarted && socket && socket.readyState === WebSocket.OPEN) {
    socket.send(message.data);
    realtime.framesSent += 1;
  }
}

// ------------------------------------------------------------------------------------------- audio
async function setupAudio() {
  playbackContext = new AudioContext();
  captureContext = new AudioContext({ sampleRate: 16000 });
  await playbackContext.resume();
  await captureContext.resume();
  microphone = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  await captureContext.audioWorklet.addModule(new URL("capture-worklet.js", STATIC_BASE).href);
  const source = captureContext.createMediaStreamSource(microphone);
  capture = new AudioWorkletNode(captureContext, "pcm16-capture", {
    processorOptions: { frameSamples: FRAME_SAMPLES },
  });
  const mute = captureContext.createGain();
  mute.gain.value = 0;
  source.connect(capture).connect(mute).connect(captureContext.destination);
  capture.port.onmessage = sendFrame;
  playbackReporter = setInterval(reportPlayback, 100);
}

function teardownAudio() {
  if (playbackReporter !== null) clearInterval(playbackReporter);
  playbackReporter = null;
  stopPlayback();
  if (capture) capture.port.onmessage = null;
  if (microphone) microphone.getTracks().forEach((track) => track.stop());
  for (const context of [captureContext, playbackContext]) {
    if (context) context.close().catch(() => {});
  }
  capture = microphone = captureContext = playbackContext = null;
}

// ----------------------------------------------------------------------------------------- buttons
async function start() {
  if (wanted) {
    if (realtime.connection === "reconnecting") { // "Reconnect now"
      clearReconnect();
      realtime.reconnects += 1;
      connect();
    }
    return;
  }
  wanted = true;
  failedAttempts = 0;
  realtime.reconnects = 0;
  realtime.status = "connecting";
  showConnection("connecting");
  try {
    await setupAudio();
  } catch (error) {
    wanted = false;
    teardownAudio();
    realtime.status = "failed";
    realtime.errors.push({ code: "setup", message: String(error) });
    logLine(`could not start: ${error}`, "error");
    showConnection("disconnected", "no microphone");
    return;
  }
  if (wanted) connect(); // Stop may have been pressed while the microphone was being opened
}

function stop() {
  wanted = false;
  clearReconnect();
  const ws = socket;
  socket = null;
  sessionStarted = false;
  if (ws) ws.close(1000, "stopped by the user");
  teardownAudio();
  showState("idle");
  realtime.status = "closed";
  showConnection("disconnected", "stopped");
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
showConnection("idle");
if (new URLSearchParams(location.search).has("autostart")) start();
