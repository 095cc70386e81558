// Plays a multivariant HLS playlist with hls.js in headless Chromium and forces each level in
// turn (hls.currentLevel), as a viewer's player switching renditions would; prints one JSON line:
// the levels hls.js found (size, bandwidth), the sizes the <video> showed after each switch,
// stalls and errors.
//
//   node abr.mjs URL_OF_INDEX_M3U8 SECONDS_PER_LEVEL
import { launchChromium } from "./browser.mjs";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));

const [url, perLevelArg] = process.argv.slice(2);
const perLevel = Number(perLevelArg);
const origin = new URL(url).origin;
const hlsJs = readFileSync(join(here, "node_modules/hls.js/dist/hls.min.js"), "utf8");

const page_html = `<!doctype html><html><body>
<video id="v" muted playsinline></video>
<script src="/__test/hls.min.js"></script>
<script>
window.result = { errors: [], notes: [], stalls: 0, waiting: 0, started: false, switched: [] };
const v = document.getElementById("v");
v.addEventListener("error", () => window.result.errors.push("video error " + (v.error && v.error.message)));
v.addEventListener("playing", () => { window.result.started = true; });
v.addEventListener("waiting", () => { if (window.result.started) window.result.waiting++; });
const hls = new Hls({ enableWorker: false, lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
window.hls = hls;
hls.on(Hls.Events.ERROR, (_e, d) => {
  if (d.fatal) window.result.errors.push("hls fatal " + d.details);
  else if (window.result.notes.length < 20) window.result.notes.push(d.details + (d.url ? " " + d.url : ""));
  if (d.details === "bufferStalledError" && window.result.started) window.result.stalls++;
});
hls.on(Hls.Events.LEVEL_SWITCHED, (_e, d) => window.result.switched.push(d.level));
hls.loadSource(${JSON.stringify(url)});
hls.attachMedia(v);
hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(e => window.result.errors.push("play " + e)));
</script></body></html>`;

const browser = await launchChromium();
const out = { levels: [], shown: [] };
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
    return {
      t: v.currentTime, width: v.videoWidth, height: v.videoHeight,
      level: window.hls.currentLevel,
      levels: window.hls.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate })),
      r: window.result,
    };
  });
  const end0 = Date.now() + 20000;
  let s = await state();
  while (!(s.t > 0.5 && s.r.started) && !s.r.errors.length && Date.now() < end0) {
    await new Promise((r) => setTimeout(r, 100));
    s = await state();
  }
  out.levels = s.levels;
  const t0 = s.t;
  const started = Date.now();
  const first = s;
  // Each level in turn, from the last to the first, then back to the last: hls.nextLevel, the
  // switch an ABR controller makes (at the next fragment, keeping what is buffered).
  const order = s.levels.map((_, i) => s.levels.length - 1 - i).concat([s.levels.length - 1]);
  for (const level of order) {
    const want = s.levels[level];
    const asked = Date.now();
    await page.evaluate((l) => { window.hls.nextLevel = l; }, level);
    // Until the picture has the level's size (at most 12 s), then perLevel seconds of it.
    s = await state();
    while (!(s.width === want.width && s.height === want.height) && Date.now() - asked < 12000 && !s.r.errors.length) {
      await new Promise((r) => setTimeout(r, 100));
      s = await state();
    }
    const switchMs = Date.now() - asked;
    await new Promise((r) => setTimeout(r, perLevel * 1000));
    s = await state();
    out.shown.push({ level, width: s.width, height: s.height, current: s.level, switch_ms: switchMs });
    if (s.r.errors.length) break;
  }
  out.played = s.t - t0;
  out.wall = (Date.now() - started) / 1000;
  out.switched = s.r.switched;
  out.stalls = s.r.stalls - first.r.stalls;
  out.waiting = s.r.waiting - first.r.waiting;
  out.errors = s.r.errors;
  out.notes = s.r.notes;
} catch (e) {
  out.errors = (out.errors || []).concat(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
