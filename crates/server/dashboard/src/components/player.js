// The embedded low-latency player of a path: WebRTC through WHEP (offer with recvonly video and
// audio, ICE gathered before sending), falling back to HLS (native, or Sluice's own hls.js from
// the HTTP listener) when WHEP fails or no frame shows within 5 s. The <video> says which one
// plays in data-via. The player link (`query`) is read when a session starts: a WebRTC session
// keeps playing when it changes, HLS playback restarts with the new link.
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import { whepOffer, whepClose } from "../api.js";
import { withQuery } from "../urls.js";

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
    const timer = setTimeout(() => reject(new Error(`no picture within ${ms / 1000} s`)), ms);
    const ok = () => {
      clearTimeout(timer);
      resolve();
    };
    if (video.readyState >= 2) ok();
    else video.addEventListener("loadeddata", ok, { once: true });
  });
}

/**
 * The cleanups of one playback attempt: close() runs them all once (newest first), and one
 * added after close() runs at once, so a step that ends after the teardown undoes itself.
 */
function scope() {
  const cleanups = [];
  let live = true;
  return {
    live: () => live,
    add: (f) => (live ? cleanups.push(f) : f()),
    close() {
      live = false;
      cleanups.splice(0).reverse().forEach((f) => f());
    },
  };
}

/** Throws when the attempt was torn down while a step waited. */
function check(s) {
  if (!s.live()) throw new Error("stopped");
}

async function playWebRTC(video, url, s) {
  const pc = new RTCPeerConnection();
  s.add(() => pc.close());
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    if (!s.live()) return;
    stream.addTrack(e.track);
    if (video.srcObject !== stream) video.srcObject = stream;
  };
  s.add(() => {
    if (video.srcObject === stream) video.srcObject = null;
  });
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  check(s);
  const answer = await whepOffer(url, pc.localDescription.sdp);
  // Torn down during the offer: add() ends the new WHEP session at once.
  if (answer.location) s.add(() => whepClose(answer.location));
  check(s);
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  check(s);
  await firstFrame(video, FIRST_FRAME_MS);
}

let hlsScript = null;
function loadScript(src) {
  if (window.Hls) return Promise.resolve();
  if (!hlsScript) {
    hlsScript = new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = src;
      el.onload = resolve;
      el.onerror = () => {
        hlsScript = null;
        el.remove();
        reject(new Error("hls.js could not be loaded"));
      };
      document.head.append(el);
    });
  }
  return hlsScript;
}

async function playHLS(video, url, scriptUrl, s) {
  if (video.canPlayType("application/vnd.apple.mpegurl")) {
    video.src = url;
    s.add(() => {
      video.removeAttribute("src");
      video.load();
    });
  } else {
    await loadScript(scriptUrl);
    check(s);
    if (!window.Hls || !window.Hls.isSupported()) throw new Error("this browser cannot play HLS");
    const hls = new window.Hls({ lowLatencyMode: true });
    s.add(() => hls.destroy());
    hls.loadSource(url);
    hls.attachMedia(video);
  }
  await firstFrame(video, 20000);
}

/**
 * urls: {whep, hls, hlsScript} without the player link (null when the listener is absent); null
 * while not known. query: the current player link ("" for none).
 */
export function Player({ urls, query }) {
  const video = useRef(null);
  const link = useRef(query);
  link.current = query || "";
  const renew = useRef(null);
  const [via, setVia] = useState(null);
  const [status, setStatus] = useState("Connecting…");

  useEffect(() => {
    if (!urls) return undefined;
    const v = video.current;
    let live = true;
    let attempt = scope();
    let hlsQuery = null; // the link the HLS attempt was started with (null: no HLS attempt)
    const hls = async (why, again) => {
      attempt.close();
      const s = (attempt = scope());
      hlsQuery = link.current;
      try {
        if (!again) setStatus(`${why}Trying HLS…`);
        await playHLS(v, withQuery(urls.hls, hlsQuery), urls.hlsScript, s);
        if (!s.live()) return;
        setVia("hls");
        setStatus(`Playing over HLS${why ? ` (${why.trim()})` : ""}`);
      } catch (e) {
        if (s.live()) setStatus(`${why}HLS: ${e.message}`);
      }
    };
    let why = "";
    // A new player link: HLS reads it only when it starts (WebRTC needed it only to connect).
    renew.current = () => {
      if (live && hlsQuery !== null && link.current !== hlsQuery) hls(why, true);
    };
    (async () => {
      if (urls.whep) {
        const s = attempt;
        try {
          setStatus("Connecting over WebRTC…");
          await playWebRTC(v, withQuery(urls.whep, link.current), s);
          if (!s.live()) return;
          setVia("webrtc");
          setStatus("Playing over WebRTC");
          return;
        } catch (e) {
          if (!s.live()) return;
          why = `WebRTC: ${e.message}. `;
          s.close();
        }
      }
      if (!live) return;
      if (!urls.hls) {
        setStatus(`${why}No HLS listener to fall back to.`);
        return;
      }
      await hls(why, false);
    })();
    return () => {
      live = false;
      renew.current = null;
      attempt.close();
      setVia(null);
    };
  }, [urls && urls.whep, urls && urls.hls]);

  useEffect(() => {
    if (renew.current) renew.current();
  }, [query]);

  return html`<figure class="player">
    <video ref=${video} data-testid="player" data-via=${via || undefined} muted autoplay playsinline controls
      aria-label="Live picture"></video>
    <figcaption>
      ${via && html`<span class="badge ok">${via === "webrtc" ? "WebRTC" : "HLS"}</span>`}
      <span aria-live="polite">${status}</span>
    </figcaption>
  </figure>`;
}
