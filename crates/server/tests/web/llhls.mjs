// Plays a live LL-HLS stream with hls.js (lowLatencyMode) in headless Chromium for a while and
// measures what a viewer sees; prints one JSON line.
//
//   node llhls.mjs URL_OF_INDEX_M3U8 SECONDS
//
// Latency is measured two ways, sampled every 250 ms once playing: hls.js's own `latency`
// (live edge minus playhead), and wall clock minus the EXT-X-PROGRAM-DATE-TIME of the frame on
// screen (`hls.playingDate`), which Sluice stamps at ingest. Stalls are `waiting` events of the
// <video> and hls.js BUFFER_STALLED_ERRORs after playback started.
import { launchChromium } from "./browser.mjs";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const origin = new URL(url).origin;
const hlsJs = readFileSync(join(here, "node_modules/hls.js/dist/hls.min.js"), "utf8");

const page_html = `<!doctype html><html><body>
<video id="v" muted playsinline></video>
<script src="/__test/hls.min.js"></script>
<script>
window.result = { errors: [], stalls: 0, waiting: 0, started: false, partLoads: 0, blockingReloads: 0 };
const v = document.getElementById("v");
v.addEventListener("error", () => window.result.errors.push("video error " + (v.error && v.error.message)));
v.addEventListener("playing", () => { window.result.started = true; });
v.addEventListener("waiting", () => { if (window.result.started) window.result.waiting++; });
// maxLiveSyncPlaybackRate lets hls.js play up to 1.5x to get back to its target latency
// (PART-HOLD-BACK) after a start or a slow moment (a loaded CI machine); without it hls.js
// stays wherever it fell behind.
const hls = new Hls({ enableWorker: false, lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
window.hls = hls;
hls.on(Hls.Events.ERROR, (_e, d) => {
  if (d.fatal) window.result.errors.push("hls fatal " + d.details);
  if (d.details === "bufferStalledError" && window.result.started) window.result.stalls++;
});
hls.on(Hls.Events.FRAG_LOADED, (_e, d) => { if (d.part) window.result.partLoads++; });
hls.on(Hls.Events.LEVEL_LOADED, (_e, d) => { if (d.details && d.details.canBlockReload) window.result.blockingReloads++; });
hls.loadSource(${JSON.stringify(url)});
hls.attachMedia(v);
hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(e => window.result.errors.push("play " + e)));
</script></body></html>`;

const browser = await launchChromium();
const out = {};
try {
  const page = await browser.newPage();
  await page.route(origin + "/__test/**", (route) => {
    const u = new URL(route.request().url());
    if (u.pathname.endsWith("hls.min.js")) {
      return route.fulfill({ contentType: "application/javascript", body: hlsJs });
    }
    return route.fulfill({ contentType: "text/html", body: page_html });
  });
  await page.goto(origin + "/__test/page.html");
  // The page and hls.js are in: stop intercepting, so that the stream's requests do not each
  // make a round trip through this script (CPU, and latency on a loaded machine).
  await page.unrouteAll();
  const state = () => page.evaluate(() => {
    const v = document.getElementById("v");
    const pd = window.hls.playingDate;
    return {
      t: v.currentTime, paused: v.paused, width: v.videoWidth, height: v.videoHeight,
      latency: window.hls.latency, target: window.hls.targetLatency,
      pdtLatency: pd ? (Date.now() - pd.getTime()) / 1000 : null,
      frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
      dropped: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().droppedVideoFrames : 0,
      r: window.result,
    };
  });
  // Wait for playback to start.
  const end0 = Date.now() + 20000;
  let s = await state();
  while (!(s.t > 0.5 && s.r.started) && !s.r.errors.length && Date.now() < end0) {
    await new Promise((r) => setTimeout(r, 100));
    s = await state();
  }
  out.startup_ms = 20000 - (end0 - Date.now());
  // Let hls.js settle on its target latency, then sample.
  await new Promise((r) => setTimeout(r, 3000));
  const first = await state();
  const samples = [];
  const endAt = Date.now() + seconds * 1000;
  while (Date.now() < endAt) {
    await new Promise((r) => setTimeout(r, 250));
    s = await state();
    if (s.r.errors.length) break;
    samples.push({ t: s.t, latency: s.latency, pdt: s.pdtLatency });
  }
  const sorted = (a) => a.filter((x) => typeof x === "number" && isFinite(x)).sort((x, y) => x - y);
  const q = (a, p) => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : null);
  const lat = sorted(samples.map((x) => x.latency));
  const pdt = sorted(samples.map((x) => x.pdt));
  out.played = s.t - first.t;
  out.wall = seconds;
  out.width = s.width;
  out.height = s.height;
  out.frames = s.frames - first.frames;
  out.dropped = s.dropped - first.dropped;
  out.latency_p50 = q(lat, 0.5);
  out.latency_max = q(lat, 1);
  out.pdt_latency_p50 = q(pdt, 0.5);
  out.pdt_latency_p95 = q(pdt, 0.95);
  out.target_latency = s.target;
  out.stalls = s.r.stalls - first.r.stalls;
  out.waiting = s.r.waiting - first.r.waiting;
  out.part_loads = s.r.partLoads;
  out.blocking_reloads = s.r.blockingReloads;
  out.errors = s.r.errors;
} catch (e) {
  out.errors = (out.errors || []).concat(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
