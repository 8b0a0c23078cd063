// Browser client of `stepaudio serve-realtime`: microphone -> AudioWorklet -> PCM16 16 kHz frames over
// the WebSocket; JSON events -> state indicator, transcript, reply text, latency; PCM16 22.05 kHz
// audio -> scheduled playback.  Everything observable is mirrored in `window.realtime` (tests read it).
"use strict";

const realtime = {
  status: "idle", // idle | connecting | running | closed | failed
  state: "silence",
  framesSent: 0,
  chunksReceived: 0,
  chunksPlayed: 0,
  secondsPlayed: 0,
  transcripts: [],
  replyText: "",
  latencies: [],
  errors: [],
  outputSampleRate: 22050,
};
window.realtime = realtime;

let socket = null;
let captureContext = null;
let playbackContext = null;
let microphone = null;
let nextPlayTime = 0;
let playing = [];
let pendingAudioHeader = null;
let replyTurn = null; // turn of the reply being played
let replySources = []; // {start, duration} of its scheduled chunks (playback context time)
let playbackReporter = null;

const $ = (id) => document.getElementById(id);

function logLine(text, cls) {
  const line = document.createElement("p");
  line.className = cls;
  line.textContent = text;
  $("log").appendChild(line);
  return line;
}

function showState(state) {
  realtime.state = state;
  $("state").textContent = state.replace("_", " ");
  $("state").className = state;
}

function stopPlayback() {
  for (const source of playing) {
    try { source.stop(); } catch (error) { /* already stopped */ }
  }
  playing = [];
  nextPlayTime = 0;
  replySources = [];
}

function secondsOfReplyPlayed() {
  const now = playbackContext.currentTime;
  return replySources.reduce((sum, s) => sum + Math.min(Math.max(now - s.start, 0), s.duration), 0);
}

function reportPlayback() {
  // Tells the server how much of the reply was heard, so a barge-in keeps exactly that in the history.
  if (replyTurn === null || !socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ type: "playback", turn: replyTurn, played_s: secondsOfReplyPlayed() }));
}

function playPcm16(buffer) {
  const pcm = new Int16Array(buffer);
  const rate = pendingAudioHeader ? pendingAudioHeader.sample_rate : realtime.outputSampleRate;
  pendingAudioHeader = null;
  realtime.chunksReceived += 1;
  if (pcm.length === 0) return;
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

let replyLine = null;

function handleEvent(event) {
  switch (event.type) {
    case "ready":
      realtime.outputSampleRate = event.output_sample_rate;
      realtime.status = "running";
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
      break;
    default:
      break;
  }
}

async function start() {
  $("start").disabled = true;
  realtime.status = "connecting";
  try {
    playbackContext = new AudioContext();
    captureContext = new AudioContext({ sampleRate: 16000 });
    await playbackContext.resume();
    await captureContext.resume();
    microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    await captureContext.audioWorklet.addModule("/static/capture-worklet.js");
    const source = captureContext.createMediaStreamSource(microphone);
    const capture = new AudioWorkletNode(captureContext, "pcm16-capture", {
      processorOptions: { frameSamples: 512 },
    });
    const mute = captureContext.createGain();
    mute.gain.value = 0;
    source.connect(capture).connect(mute).connect(captureContext.destination);

    socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: "start", sample_rate: 16000, format: "pcm16" }));
      capture.port.onmessage = (message) => {
        if (socket.readyState === WebSocket.OPEN) {
          socket.send(message.data);
          realtime.framesSent += 1;
        }
      };
    };
    socket.onmessage = (message) => {
      if (typeof message.data === "string") handleEvent(JSON.parse(message.data));
      else playPcm16(message.data);
    };
    socket.onclose = () => {
      realtime.status = realtime.status === "failed" ? "failed" : "closed";
      $("stop").disabled = true;
    };
    socket.onerror = () => {
      realtime.status = "failed";
      realtime.errors.push({ code: "socket", message: "WebSocket error" });
    };
    playbackReporter = setInterval(reportPlayback, 100);
    $("stop").disabled = false;
  } catch (error) {
    realtime.status = "failed";
    realtime.errors.push({ code: "setup", message: String(error) });
    logLine(`could not start: ${error}`, "error");
    $("start").disabled = false;
  }
}

function stop() {
  if (playbackReporter !== null) clearInterval(playbackReporter);
  if (socket) socket.close();
  if (microphone) microphone.getTracks().forEach((track) => track.stop());
  stopPlayback();
  $("start").disabled = false;
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
if (new URLSearchParams(location.search).has("autostart")) start();
