// Plays a live DASH / LL-DASH stream with dash.js in headless Chromium for a while and measures
// what a viewer sees; prints one JSON line.
//
//   node dash.mjs URL SECONDS
//
// URL is either
//   - a player page, e.g. http://127.0.0.1:8888/live/cam/dash.html (Sluice's own DASH page,
//     which loads dash.js from /~sluice/ and plays index.mpd next to it), or
//   - an MPD (its path ends in .mpd), e.g. http://127.0.0.1:PROXY/live/cam/index.mpd: then a
//     minimal page of our own is served at ORIGIN_OF_THE_MPD/__test/dash.html (so the MPD and
//     its segments are same-origin, as through a proxy cache), which loads dash.js from
//     $DASHJS_URL (default ORIGIN_OF_THE_MPD/~sluice/dash.all.min.js) and plays the MPD.
//
// Environment: CHROMIUM_EXTRA_ARGS (extra Chromium flags, space separated, e.g.
// --ignore-certificate-errors-spki-list=HASH), DASHJS_URL (MPD mode only), STARTUP_MS (how long
// to wait for playback to start, default 20000).
//
// Every dash.js MediaPlayer the page creates is hooked (dash.js's global is wrapped before the
// page's scripts run): its error events, bufferStalled events and the kinds of the requests it
// loads (mpd, init, media) are recorded. Latency is dash.js's getCurrentLiveLatency() (the
// playhead against the wall clock dash.js syncs with the MPD's UTCTiming), sampled every 250 ms
// once playing. Stalls are `waiting` events of the <video> after playback started. Every
// request the page makes is recorded: nothing may come from another origin (but $DASHJS_URL);
// responses of 400 and above are counted and the first few listed.
import { launchChromium } from "./browser.mjs";

const [url, secondsArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const startupMs = Number(process.env.STARTUP_MS || 20000);
const target = new URL(url);
const origin = target.origin;
const mpdMode = target.pathname.endsWith(".mpd");
const dashjsUrl = process.env.DASHJS_URL || origin + "/~sluice/dash.all.min.js";

// Our own page for MPD mode: the same dash.js settings as Sluice's dash.html (dash.js decides on
// low-latency mode from the MPD), no retries (a test wants to see the error).
const page_html = `<!doctype html><html><body>
<video id="v" muted playsinline></video>
<script src=${JSON.stringify(dashjsUrl)}></script>
<script>
const v = document.getElementById("v");
const p = window.sluicePlayer = { mode: "", latency: null, errors: [], dash: null };
if (!window.dashjs) {
  p.errors.push("dash.js did not load from " + ${JSON.stringify(dashjsUrl)});
} else {
  p.mode = "dash.js";
  const d = p.dash = dashjs.MediaPlayer().create();
  d.updateSettings({ streaming: { utcSynchronization: { defaultTimingSource: {
    scheme: "urn:mpeg:dash:utc:http-iso:2014", value: "/~sluice/time" } } } });
  d.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => v.play().catch((e) => p.errors.push("play " + e)));
  d.initialize(v, ${JSON.stringify(url)}, true);
}
</script></body></html>`;

// Runs in the page before any of its scripts: wraps dash.js's global when it is defined so
// that every MediaPlayer created gets our listeners.
function hookDashjs() {
  const R = (window.__dashTest = {
    errors: [], kinds: {}, bufferEmpty: 0, waiting: 0, started: false, player: null, players: 0,
  });
  const hookPlayer = (p) => {
    R.player = p;
    R.players++;
    const ev = window.dashjs.MediaPlayer.events;
    p.on(ev.ERROR, (e) => {
      const err = (e && e.error) || {};
      R.errors.push("dash.js error " + (err.code || "") + " " + String(err.message || "").slice(0, 200));
    });
    p.on(ev.PLAYBACK_ERROR, (e) => R.errors.push("dash.js playback error " + ((e && e.error && e.error.message) || "")));
    p.on(ev.MANIFEST_LOADED, () => { R.kinds.mpd = (R.kinds.mpd || 0) + 1; });
    p.on(ev.FRAGMENT_LOADING_COMPLETED, (e) => {
      const t = e && e.request && e.request.type;
      const k = t === "InitializationSegment" ? "init" : t === "MediaSegment" ? "media" : String(t || "other");
      R.kinds[k] = (R.kinds[k] || 0) + 1;
    });
    p.on(ev.BUFFER_EMPTY, () => { if (R.started) R.bufferEmpty++; });
  };
  const hook = (dj) => {
    if (!dj || typeof dj.MediaPlayer !== "function" || dj.MediaPlayer.__sluiceHooked) return;
    const orig = dj.MediaPlayer;
    const wrapped = function (...a) {
      const f = orig.apply(this, a);
      const create = f.create;
      f.create = function (...b) {
        const p = create.apply(this, b);
        try { hookPlayer(p); } catch (e) { R.errors.push("hook " + e); }
        return p;
      };
      return f;
    };
    for (const k of Object.keys(orig)) wrapped[k] = orig[k]; // events, errors, ...
    wrapped.__sluiceHooked = true;
    dj.MediaPlayer = wrapped;
  };
  let value;
  Object.defineProperty(window, "dashjs", {
    configurable: true,
    enumerable: true,
    get() { hook(value); return value; },
    set(v) { value = v; hook(v); },
  });
  document.addEventListener("DOMContentLoaded", () => {
    const v = document.getElementById("v") || document.querySelector("video");
    if (!v) return;
    v.addEventListener("playing", () => { R.started = true; });
    v.addEventListener("waiting", () => { if (R.started) R.waiting++; });
  });
}

const browser = await launchChromium();
const out = { mode: mpdMode ? "mpd" : "page", foreign: [], requests: 0, kinds: [], errors: [] };
const pageErrors = [];
const consoleErrors = [];
const httpErrors = [];
let httpErrorCount = 0;
const urlKinds = new Set();
try {
  const page = await browser.newPage();
  await page.addInitScript(hookDashjs);
  page.on("pageerror", (e) => pageErrors.push("page error " + String(e.message || e).slice(0, 300)));
  // Failed responses are listed by themselves (a 404 at the live edge may be normal for LL).
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource") && consoleErrors.length < 20) {
      consoleErrors.push(m.text().slice(0, 300));
    }
  });
  page.on("response", (r) => {
    if (r.status() >= 400) {
      httpErrorCount++;
      if (httpErrors.length < 10) httpErrors.push(r.status() + " " + r.url());
    }
  });
  page.on("request", (r) => {
    out.requests++;
    const u = new URL(r.url());
    if (u.protocol !== "http:" && u.protocol !== "https:") return; // data:, blob:
    if (u.origin !== origin && !(mpdMode && r.url() === dashjsUrl)) out.foreign.push(r.url());
    if (u.pathname.endsWith(".mpd")) urlKinds.add("mpd");
    else if (u.pathname.endsWith("/~sluice/time")) urlKinds.add("time");
  });
  let pageUrl = url;
  if (mpdMode) {
    pageUrl = origin + "/__test/dash.html";
    await page.route(pageUrl, (route) => route.fulfill({ contentType: "text/html", body: page_html }));
  }
  await page.goto(pageUrl);
  // Stop intercepting once the page is in: the stream's requests need no round trip here.
  if (mpdMode) await page.unrouteAll();
  const state = () => page.evaluate(() => {
    const v = document.getElementById("v") || document.querySelector("video");
    const R = window.__dashTest;
    const sp = window.sluicePlayer || {};
    const d = sp.dash || R.player;
    const call = (f) => { try { return f(); } catch (e) { return null; } };
    const ready = d && call(() => d.isReady());
    let low = null;
    if (ready) {
      low = call(() => d.getLowLatencyModeEnabled()); // dash.js 5: decided from the MPD
      if (low === null) low = call(() => d.getSettings().streaming.lowLatencyEnabled); // dash.js 4
    }
    const lat = ready ? call(() => d.getCurrentLiveLatency()) : null;
    const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    return {
      t: v ? v.currentTime : 0, paused: v ? v.paused : true,
      width: v ? v.videoWidth : 0, height: v ? v.videoHeight : 0,
      latency: typeof lat === "number" && isFinite(lat) ? lat : null,
      target: ready ? call(() => d.getTargetLiveDelay()) : null,
      low_latency: low,
      catchup: ready ? call(() => d.getSettings().streaming.liveCatchup.enabled) : null,
      version: (d && call(() => d.getVersion())) || (window.dashjs && window.dashjs.Version) || null,
      frames: q ? q.totalVideoFrames : 0, dropped: q ? q.droppedVideoFrames : 0,
      shown: (document.getElementById("l") || {}).textContent || null,
      page_errors: sp.errors || [],
      r: { errors: R.errors, kinds: R.kinds, bufferEmpty: R.bufferEmpty, waiting: R.waiting, started: R.started, players: R.players },
    };
  });
  // Wait for playback to start.
  const end0 = Date.now() + startupMs;
  let s = await state();
  while (!(s.t > 0.5 && s.r.started) && Date.now() < end0) {
    await new Promise((r) => setTimeout(r, 100));
    s = await state();
  }
  out.startup_ms = startupMs - (end0 - Date.now());
  // Let dash.js settle on its target latency, then sample.
  await new Promise((r) => setTimeout(r, 3000));
  const first = await state();
  s = first;
  const samples = [];
  const endAt = Date.now() + seconds * 1000;
  // SWITCH_MS: switch the video representation every so often (ABR off), cycling through all,
  // and record the picture sizes shown.
  const switchMs = Number(process.env.SWITCH_MS || 0);
  const sizes = new Set();
  let representations = null;
  let nextSwitch = Date.now() + switchMs;
  let switchIndex = 0;
  if (switchMs > 0) {
    representations = await page.evaluate(() => {
      const d = (window.sluicePlayer || {}).dash || window.__dashTest.player;
      d.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
      return d.getRepresentationsByType("video").map((r) => ({ id: r.id, width: r.width, height: r.height, bandwidth: r.bandwidth }));
    });
  }
  while (Date.now() < endAt) {
    await new Promise((r) => setTimeout(r, 250));
    s = await state();
    if (s.latency !== null && !s.paused) samples.push(s.latency);
    if (s.width > 0) sizes.add(s.width + "x" + s.height);
    if (switchMs > 0 && Date.now() >= nextSwitch && representations && representations.length > 1) {
      switchIndex = (switchIndex + 1) % representations.length;
      const i = switchIndex;
      await page.evaluate((i) => {
        const d = (window.sluicePlayer || {}).dash || window.__dashTest.player;
        d.setRepresentationForTypeByIndex("video", i, true);
      }, i);
      nextSwitch = Date.now() + switchMs;
    }
  }
  out.representations = representations;
  out.sizes = [...sizes].sort();
  const sorted = samples.filter((x) => typeof x === "number" && isFinite(x)).sort((x, y) => x - y);
  const q = (a, p) => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : null);
  out.dashjs_version = s.version;
  out.played = s.t - first.t;
  out.wall = seconds;
  out.width = s.width;
  out.height = s.height;
  out.frames = s.frames - first.frames;
  out.dropped = s.dropped - first.dropped;
  out.latency_samples = sorted.length;
  out.latency_min = q(sorted, 0);
  out.latency_p50 = q(sorted, 0.5);
  out.latency_p95 = q(sorted, 0.95);
  out.latency_max = q(sorted, 1);
  out.latency_last = samples.length ? samples[samples.length - 1] : null;
  out.target_latency = s.target;
  out.low_latency = s.low_latency;
  out.catchup = s.catchup;
  out.stalls = s.r.waiting - first.r.waiting;
  out.waiting = out.stalls;
  out.stalls_since_start = s.r.waiting;
  out.buffer_empty = s.r.bufferEmpty - first.r.bufferEmpty;
  out.players = s.r.players;
  out.shown = s.shown;
  const kinds = new Set([...urlKinds, ...Object.keys(s.r.kinds)]);
  out.kinds = [...kinds].sort();
  out.kind_counts = s.r.kinds;
  out.errors = [...s.r.errors, ...s.page_errors.filter((e) => !s.r.errors.includes(e)), ...pageErrors];
  out.console_errors = consoleErrors;
  out.http_error_count = httpErrorCount;
  out.http_errors = httpErrors;
} catch (e) {
  out.errors = (out.errors || []).concat(pageErrors, String(e));
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
