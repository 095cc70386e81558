// The embedded low-latency player of a path: WebRTC through WHEP (offer with recvonly video and
// audio, ICE gathered before sending), falling back to HLS (native, or Sluice's own hls.js from
// the HTTP listener) when WHEP fails or no frame shows within 5 s. The <video> says which one
// plays in data-via.
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { whepOffer, whepClose } from "../api.js";

const FIRST_FRAME_MS = 5000;
const ICE_GATHER_MS = 3000;

function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHER_MS);
  });
}

function firstFrame(video, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no picture within 5 s")), ms);
    const ok = () => {
      clearTimeout(timer);
      resolve();
    };
    if (video.readyState >= 2) ok();
    else video.addEventListener("loadeddata", ok, { once: true });
  });
}

async function playWebRTC(video, url, cleanups) {
  const pc = new RTCPeerConnection();
  cleanups.push(() => pc.close());
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    if (video.srcObject !== stream) video.srcObject = stream;
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await whepOffer(url, pc.localDescription.sdp);
  if (answer.location) cleanups.push(() => whepClose(answer.location));
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  await firstFrame(video, FIRST_FRAME_MS);
}

function loadScript(src) {
  if (window.Hls) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error("hls.js could not be loaded"));
    document.head.append(s);
  });
}

async function playHLS(video, url, scriptUrl, cleanups) {
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    cleanups.push(() => video.removeAttribute("src"));
  } else {
    await loadScript(scriptUrl);
    if (!window.Hls || !window.Hls.isSupported()) throw new Error("this browser cannot play HLS");
    const hls = new window.Hls({ lowLatencyMode: true });
    cleanups.push(() => hls.destroy());
    hls.loadSource(url);
    hls.attachMedia(video);
  }
  await firstFrame(video, 20000);
}

/** urls: {whep, hls, hlsScript} (null when the listener is absent); null while not known. */
export function Player({ urls }) {
  const video = useRef(null);
  const [via, setVia] = useState(null);
  const [status, setStatus] = useState("Connecting…");

  useEffect(() => {
    if (!urls) return undefined;
    const v = video.current;
    let cleanups = [];
    let live = true;
    const reset = () => {
      cleanups.forEach((f) => f());
      cleanups = [];
      v.srcObject = null;
    };
    (async () => {
      let why = "";
      if (urls.whep) {
        try {
          setStatus("Connecting over WebRTC…");
          await playWebRTC(v, urls.whep, cleanups);
          if (!live) return;
          setVia("webrtc");
          setStatus("Playing over WebRTC");
          return;
        } catch (e) {
          why = `WebRTC: ${e.message}. `;
          reset();
        }
      }
      if (!live) return;
      if (!urls.hls) {
        setStatus(`${why}No HLS listener to fall back to.`);
        return;
      }
      try {
        setStatus(`${why}Trying HLS…`);
        await playHLS(v, urls.hls, urls.hlsScript, cleanups);
        if (!live) return;
        setVia("hls");
        setStatus(`Playing over HLS${why ? ` (${why.trim()})` : ""}`);
      } catch (e) {
        if (live) setStatus(`${why}HLS: ${e.message}`);
      }
    })();
    return () => {
      live = false;
      reset();
      setVia(null);
    };
  }, [urls && urls.whep, urls && urls.hls]);

  return html`<figure class="player">
    <video ref=${video} data-testid="player" data-via=${via || undefined} muted autoplay playsinline controls
      aria-label="Live picture"></video>
    <figcaption>
      ${via && html`<span class="badge ok">${via === "webrtc" ? "WebRTC" : "HLS"}</span>`}
      <span aria-live="polite">${status}</span>
    </figcaption>
  </figure>`;
}
