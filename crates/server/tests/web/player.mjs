// Opens Sluice's own player page (http://HOST:8888/PATH/) in headless Chromium, as a viewer
// would, and reports what it shows; prints one JSON line.
//
//   node player.mjs URL_OF_THE_PAGE SECONDS
//
// Every request the page makes is recorded: the page must load nothing from another origin.
import { launchChromium } from "./browser.mjs";

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const origin = new URL(url).origin;

const browser = await launchChromium();
const out = { foreign: [], requests: 0 };
try {
  const page = await browser.newPage();
  page.on("request", (r) => {
    out.requests++;
    // blob: URLs (hls.js's worker) are made by the page itself.
    const u = new URL(r.url());
    if ((u.protocol === "http:" || u.protocol === "https:") && u.origin !== origin) out.foreign.push(r.url());
  });
  await page.goto(url);
  const state = () => page.evaluate(() => {
    const v = document.getElementById("v");
    const p = window.sluicePlayer || {};
    return {
      t: v.currentTime, width: v.videoWidth, height: v.videoHeight, mode: p.mode,
      latency: p.latency, errors: p.errors || [], shown: document.getElementById("l").textContent,
      hlsVersion: window.Hls ? window.Hls.version : null,
    };
  });
  const end0 = Date.now() + 20000;
  let s = await state();
  while (!(s.t > 0.5) && Date.now() < end0) {
    await new Promise((r) => setTimeout(r, 100));
    s = await state();
  }
  const first = s;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  s = await state();
  Object.assign(out, {
    mode: s.mode, hls_version: s.hlsVersion, width: s.width, height: s.height,
    played: s.t - first.t, wall: seconds, latency: s.latency, shown: s.shown, errors: s.errors,
  });
} catch (e) {
  out.errors = (out.errors || []).concat(String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
