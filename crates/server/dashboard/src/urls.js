// Public URLs of Sluice's other listeners for a path, built from `server.listeners` (their ports
// and schemes) and the host the dashboard was opened with. A listener that is absent gives null.

/** {scheme, base} of a listener ("0.0.0.0:8888 (https)" -> https://HOST:8888), or null. */
export function listener(server, name, plain = "http", secure = "https") {
  const addr = server && server.listeners && server.listeners[name];
  if (!addr) return null;
  const m = /:(\d+)(?:\s|$)/.exec(addr);
  if (!m) return null;
  const scheme = /\(https\)/.test(addr) ? secure : plain;
  return { scheme, port: m[1], base: `${scheme}://${location.hostname}:${m[1]}` };
}

const segs = (name) => name.split("/").map(encodeURIComponent);
const esc = (name) => segs(name).join("/");
/** `url` with the query `q` (a player link, without "?") added; `url` when `q` is empty. */
export const withQuery = (url, q) => (q ? `${url}${url.includes("?") ? "&" : "?"}${q}` : url);

/** Base URLs of the listeners the dashboard's own features use (null when absent). */
export function bases(server) {
  const http = listener(server, "http");
  const webrtc = listener(server, "webrtc");
  const playback = listener(server, "playback");
  return { http: http && http.base, webrtc: webrtc && webrtc.base, playback: playback && playback.base };
}

/** URLs to play the path in the dashboard, with the player-link query `q`. */
export function playerUrls(server, name, q) {
  const b = bases(server);
  return {
    whep: b.webrtc && withQuery(`${b.webrtc}/${esc(name)}/whep`, q),
    hls: b.http && withQuery(`${b.http}/${esc(name)}/index.m3u8`, q),
    hlsScript: b.http && `${b.http}/~sluice/hls.min.js`,
    snapshot: b.http && withQuery(`${b.http}/${esc(name)}/snapshot.jpg?width=640`, q),
  };
}

/** Playback (recordings) URL of a range: /get?path=&start=&duration=[&format=mp4]. */
export function playbackUrl(server, name, start, seconds, { format, query } = {}) {
  const b = bases(server);
  if (!b.playback) return null;
  const p = new URLSearchParams({ path: name, start, duration: String(Math.max(1, Math.round(seconds))) });
  if (format) p.set("format", format);
  return withQuery(`${b.playback}/get?${p}`, query);
}

/** Ready-to-copy publish and play URLs: {publish: [[label, url]], play: [[label, url]]}. */
export function streamUrls(server, name) {
  const rtmp = listener(server, "rtmp", "rtmp", "rtmps");
  const rtmps = listener(server, "rtmps", "rtmps", "rtmps");
  const srt = listener(server, "srt", "srt", "srt");
  const http = listener(server, "http");
  const webrtc = listener(server, "webrtc");
  const parts = segs(name);
  const key = parts[parts.length - 1];
  const app = parts.slice(0, -1).join("/");
  const publish = [];
  const play = [];
  if (rtmp) {
    publish.push(["OBS / vMix server", app ? `${rtmp.base}/${app}` : rtmp.base], ["OBS / vMix stream key", key]);
    publish.push(["RTMP (ffmpeg)", `${rtmp.base}/${esc(name)}`]);
    play.push(["RTMP", `${rtmp.base}/${esc(name)}`]);
  }
  if (rtmps) {
    publish.push(["RTMPS", `${rtmps.base}/${esc(name)}`]);
    play.push(["RTMPS", `${rtmps.base}/${esc(name)}`]);
  }
  if (srt) {
    publish.push(["SRT", `${srt.base}?streamid=publish:${name}`]);
    play.push(["SRT", `${srt.base}?streamid=read:${name}`]);
  }
  if (webrtc) {
    publish.push(["WebRTC (WHIP)", `${webrtc.base}/${esc(name)}/whip`]);
  }
  if (http) {
    play.push(
      ["HLS", `${http.base}/${esc(name)}/index.m3u8`],
      ["DASH", `${http.base}/${esc(name)}/index.mpd`],
      ["HTTP-FLV", `${http.base}/${esc(name)}.flv`],
    );
  }
  if (webrtc) play.push(["WebRTC (WHEP)", `${webrtc.base}/${esc(name)}/whep`]);
  if (http) play.push(["Player page", `${http.base}/${esc(name)}/`]);
  return { publish, play };
}
