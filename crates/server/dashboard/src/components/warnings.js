// Health warnings of a live path, from its `health`, tracks, pushes and recording: the badges
// shown on the paths list and the path page.
import { html } from "htm/preact";

const KEYFRAME_WARN_S = 4;

/** [{key, text}] for a path item of /v1/paths. */
export function pathWarnings(p) {
  const out = [];
  const h = p.health || {};
  if (h.stream === "stalled") out.push({ key: "stalled", text: "Stalled" });
  if (h.silence === "silent") out.push({ key: "silent", text: "Audio silent" });
  if (h.audio === "absent") out.push({ key: "no-audio", text: "No audio" });
  if (h.video === "absent") out.push({ key: "no-video", text: "No video" });
  if (h.timestamps === "jumping") out.push({ key: "timestamps", text: "Timestamps jumping" });
  const video = (p.tracks || []).find((t) => t.kind === "video");
  const kfi = h.keyframe_interval_s ?? (video && video.keyframe_interval_s);
  if (kfi > KEYFRAME_WARN_S) {
    out.push({ key: "keyframes", text: `Keyframes every ${Number(kfi.toFixed(1))} s` });
  }
  if ((p.pushes || []).some((x) => x.state === "retrying" || x.state === "refused")) {
    out.push({ key: "push", text: "Push failing" });
  }
  if (p.recording && p.recording.state === "error") out.push({ key: "recording", text: "Recording error" });
  return out;
}

export function Warnings({ path }) {
  const list = pathWarnings(path);
  if (!list.length) return null;
  return html`<ul class="warnings" aria-label="Warnings">
    ${list.map(
      (w) => html`<li><span class="badge bad warning" data-testid="warning" data-warning=${w.key}>
        ${w.text}</span></li>`,
    )}
  </ul>`;
}
