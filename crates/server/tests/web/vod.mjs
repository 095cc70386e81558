// Plays a recording in headless Chromium and seeks in it; prints one JSON line.
//
//   node vod.mjs hls URL_OF_M3U8 SEEK_SECONDS   (hls.js, from ./node_modules)
//   node vod.mjs mp4 URL_OF_GET SEEK_SECONDS    (a plain <video src>)
//
// The page is served (through Playwright's routing) from the playback listener's own origin, so
// the media requests are same-origin and need no CORS.
import { launchChromium } from "./browser.mjs";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));

const [mode, url, seekArg] = process.argv.slice(2);
const seekTo = Number(seekArg);
const origin = new URL(url).origin;
const hlsJs = readFileSync(join(here, "node_modules/hls.js/dist/hls.min.js"), "utf8");

const page_html = `<!doctype html><html><body>
<video id="v" muted playsinline></video>
<script src="/__test/hls.min.js"></script>
<script>
window.result = { errors: [] };
const v = document.getElementById("v");
v.addEventListener("error", () => window.result.errors.push("video error " + (v.error && v.error.message)));
if (${JSON.stringify(mode)} === "hls") {
  const hls = new Hls({ enableWorker: false });
  hls.on(Hls.Events.ERROR, (_e, d) => { if (d.fatal) window.result.errors.push("hls fatal " + d.details); });
  hls.loadSource(${JSON.stringify(url)});
  hls.attachMedia(v);
  hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(e => window.result.errors.push("play " + e)));
} else {
  v.src = ${JSON.stringify(url)};
  v.play().catch(e => window.result.errors.push("play " + e));
}
</script></body></html>`;

const browser = await launchChromium();
const out = { mode };
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
    const b = [];
    for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]);
    return {
      t: v.currentTime, duration: v.duration, paused: v.paused, ready: v.readyState,
      width: v.videoWidth, buffered: b, errors: window.result.errors,
      frames: v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
    };
  });
  const waitFor = async (what, f, ms) => {
    const end = Date.now() + ms;
    let s = await state();
    while (!f(s) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      s = await state();
    }
    return s;
  };
  let s = await waitFor("play", (s) => s.t > 1.5 || s.errors.length, 20000);
  out.played = s.t;
  out.duration = s.duration;
  out.width = s.width;
  await page.evaluate((t) => { document.getElementById("v").currentTime = t; }, seekTo);
  s = await waitFor("seek", (s) => s.t > seekTo + 1 || s.errors.length, 20000);
  out.after_seek = s.t;
  out.paused = s.paused;
  out.frames = s.frames;
  out.buffered = s.buffered;
  out.errors = s.errors;
} catch (e) {
  out.errors = [(out.errors || []).concat(String(e))];
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
