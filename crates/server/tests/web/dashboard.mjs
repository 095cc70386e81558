// Drives the real dashboard (served by Sluice on its API port) in headless Chromium, as a user
// would, and prints one JSON line with what it saw; the Rust test (tests/dashboard.rs) asserts.
//
//   node dashboard.mjs SCENARIO API_ORIGIN [ARGS...]
//
// Scenarios:
//   live API PATH QUIET_PATH PUBLISH_CMD_JSON   the overview before and after a publisher starts
//        (PUBLISH_CMD_JSON: the ffmpeg argv this script spawns once the page is loaded), the path
//        page's player and snapshot, and the silent-audio warning on QUIET_PATH
//   manage API PATH PUSH_URL                    kick an RTMP reader from the sessions page, add a
//        push destination on the path page, change a path setting on the config page
//   records API PATH                            the recordings and server pages
//   login API PATH USER PASS                    an unauthenticated browser, a wrong password, a
//        login, the cookie, CSRF, the player of a protected path, logout
//
// SHOTS (env): the directory for screenshots (PAGE.png). Every page visited is scanned with
// axe-core; serious and critical violations are reported in `axe`.
import { launchChromium } from "./browser.mjs";
import { readFileSync, mkdirSync } from "node:fs";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const axeSource = readFileSync(join(here, "node_modules/axe-core/axe.min.js"), "utf8");
const [scenario, api, ...args] = process.argv.slice(2);
const shots = process.env.SHOTS || "";
if (shots) mkdirSync(shots, { recursive: true });

const result = { scenario, axe: {}, errors: [], console: [] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function apiGet(path, headers = {}) {
  const r = await fetch(api + path, { headers });
  return { status: r.status, body: r.headers.get("content-type")?.includes("json") ? await r.json() : await r.text() };
}

/// axe-core on the page as it is: serious and critical violations, by rule.
async function axe(page, name) {
  await page.evaluate(axeSource);
  const r = await page.evaluate(async () => {
    const out = await window.axe.run(document, { resultTypes: ["violations"] });
    return out.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
  });
  result.axe[name] = r;
}

async function shot(page, name) {
  if (shots) await page.screenshot({ path: join(shots, `dashboard-${name}.png`), fullPage: true });
}

/// Frames the page's player decoded within `ms`, and how it plays.
async function playerFrames(page, ms) {
  const video = page.locator('[data-testid="player"]');
  await video.waitFor({ timeout: 15000 });
  await page.waitForFunction(
    () => {
      const v = document.querySelector('[data-testid="player"]');
      return v && v.dataset.via && v.getVideoPlaybackQuality().totalVideoFrames > 0;
    },
    null,
    { timeout: 20000 },
  );
  const first = await page.evaluate(() => document.querySelector('[data-testid="player"]').getVideoPlaybackQuality().totalVideoFrames);
  await sleep(ms);
  return page.evaluate((first) => {
    const v = document.querySelector('[data-testid="player"]');
    return { via: v.dataset.via, frames: v.getVideoPlaybackQuality().totalVideoFrames - first, width: v.videoWidth, height: v.videoHeight };
  }, first);
}

async function newPage(browser, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...opts });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") result.console.push(m.text().slice(0, 300));
  });
  page.on("pageerror", (e) => result.errors.push("page error: " + String(e).slice(0, 300)));
  page.on("dialog", (d) => d.accept());
  return { context, page };
}

async function live(browser) {
  const [path, quiet, publishCmd] = args;
  const { page } = await newPage(browser);
  await page.goto(api + "/");
  await page.locator('[data-testid="nav-paths"]').waitFor({ timeout: 10000 });
  await page.locator('[data-testid="conn"][data-state="live"]').waitFor({ timeout: 10000 });
  // The publisher starts now; the row must follow the server's own knowledge within 2 s.
  const argv = JSON.parse(publishCmd);
  const started = Date.now();
  const ff = spawn(argv[0], argv.slice(1), { stdio: "ignore" });
  let apiLiveAt = null;
  const watchApi = (async () => {
    while (apiLiveAt === null && Date.now() - started < 20000) {
      const r = await apiGet(`/v1/paths/${path}`);
      if (r.status === 200 && r.body.tracks?.length >= 2) apiLiveAt = Date.now();
      else await sleep(50);
    }
  })();
  const row = page.locator(`[data-testid="path-row"][data-path="${path}"]`);
  await row.locator('[data-testid="path-video"]').filter({ hasText: "h264" }).waitFor({ timeout: 20000 });
  const rowAt = Date.now();
  await watchApi;
  result.appear_after_publish_ms = rowAt - started;
  result.appear_after_api_ms = apiLiveAt === null ? null : rowAt - apiLiveAt;
  result.video_text = await row.locator('[data-testid="path-video"]').innerText();
  // Bitrate: give the server's 5 s window time to fill, then compare with the API's figure.
  await sleep(6000);
  const bps = Number(await row.locator('[data-testid="path-bitrate"]').getAttribute("data-bps"));
  const apiPath = (await apiGet(`/v1/paths/${path}`)).body;
  result.row_bps = bps;
  result.api_bps = apiPath.bitrate_in;
  result.bitrate_text = await row.locator('[data-testid="path-bitrate"]').innerText();
  // The silent publisher's warning (its health says silent after `silence_after`).
  const quietRow = page.locator(`[data-testid="path-row"][data-path="${quiet}"]`);
  await quietRow.waitFor({ timeout: 20000 });
  await quietRow.locator('[data-testid="warning"][data-warning="silent"]').waitFor({ timeout: 20000 });
  result.quiet_warning = await quietRow.locator('[data-testid="warning"][data-warning="silent"]').innerText();
  result.loud_warnings = await row.locator('[data-testid="warning"]').allInnerTexts();
  await shot(page, "overview");
  await axe(page, "overview");
  // The path's page: the player (WebRTC first), the snapshot, the URLs.
  await row.locator(`a[href="#/paths/${path}"]`).first().click();
  await page.locator(`[data-testid="path-page"][data-path="${path}"]`).waitFor({ timeout: 10000 });
  result.player = await playerFrames(page, 3000);
  const snap = page.locator('[data-testid="snapshot"]');
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-testid="snapshot"]');
    return i && i.complete && i.naturalWidth > 0;
  }, null, { timeout: 20000 });
  result.snapshot_width = await snap.evaluate((i) => i.naturalWidth);
  result.page_text = (await page.locator("main").innerText()).slice(0, 4000);
  await shot(page, "path");
  await axe(page, "path");
  // A phone's screen: the overview must not need a horizontal scroll bar for its whole page.
  const phone = await newPage(browser, { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  await phone.page.goto(api + "/");
  await phone.page.locator(`[data-testid="path-row"][data-path="${path}"]`).waitFor({ timeout: 10000 });
  result.phone_overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await shot(phone.page, "phone");
  await phone.page.emulateMedia({ colorScheme: "dark" });
  await axe(phone.page, "phone-dark");
  ff.kill("SIGTERM");
}

async function manage(browser) {
  const [path, pushUrl] = args;
  const { page } = await newPage(browser);
  await page.goto(api + "/#/sessions");
  const reader = page.locator('[data-testid="session-row"][data-protocol="rtmp"][data-role="reader"]');
  await reader.first().waitFor({ timeout: 15000 });
  result.kicked = Number(await reader.first().getAttribute("data-session"));
  await reader.first().locator('[data-testid="kick"]').click();
  await page.locator(`[data-testid="session-row"][data-session="${result.kicked}"]`).waitFor({ state: "detached", timeout: 10000 });
  await shot(page, "sessions");
  await axe(page, "sessions");
  // A push destination, added on the path's page, goes live.
  await page.goto(api + `/#/paths/${path}`);
  await page.locator(`[data-testid="path-page"][data-path="${path}"]`).waitFor({ timeout: 10000 });
  await page.locator('[data-testid="push-url"]').fill(pushUrl);
  await page.locator('[data-testid="push-add"]').click();
  const push = page.locator('[data-testid="push-row"]');
  await push.first().waitFor({ timeout: 10000 });
  await push.first().locator('[data-testid="push-state"]').filter({ hasText: /^live$/ }).waitFor({ timeout: 20000 });
  result.push_state = await push.first().locator('[data-testid="push-state"]').innerText();
  result.push_id = await push.first().getAttribute("data-push-id");
  // A bad URL is refused with the server's reason.
  await page.locator('[data-testid="push-url"]').fill("ftp://example.com/x");
  await page.locator('[data-testid="push-add"]').click();
  await page.locator('[data-testid="push-error"]').waitFor({ timeout: 10000 });
  result.push_error = await page.locator('[data-testid="push-error"]').innerText();
  // A path setting changed on the configuration page.
  await page.goto(api + "/#/config");
  await page.locator(`[data-testid="config-path"][data-name="${path}"]`).click();
  const area = page.locator('[data-testid="path-table-json"]');
  await page.waitForFunction(() => {
    const t = document.querySelector('[data-testid="path-table-json"]');
    return t && t.value.trim().startsWith("{");
  }, null, { timeout: 10000 });
  const table = JSON.parse(await area.inputValue());
  table.grace_period = "42s";
  await area.fill(JSON.stringify(table, null, 2));
  await page.locator('[data-testid="save-path"]').click();
  await page.locator('[data-testid="config-result"]').filter({ hasText: "grace_period" }).waitFor({ timeout: 10000 });
  result.config_result = await page.locator('[data-testid="config-result"]').innerText();
  // A bad value is refused with the reason, and nothing changes (once the page shows the
  // table as saved).
  await page.waitForFunction(() => document.querySelector('[data-testid="path-table-json"]').value.includes("42s"), null, { timeout: 10000 });
  await sleep(500);
  await shot(page, "config");
  table.grace_period = "soon";
  await area.fill(JSON.stringify(table));
  await page.locator('[data-testid="save-path"]').click();
  await page.locator('[data-testid="config-error"]').waitFor({ timeout: 10000 });
  result.config_error = await page.locator('[data-testid="config-error"]').innerText();
  await axe(page, "config");
}

async function records(browser) {
  const [path] = args;
  const { page } = await newPage(browser);
  await page.goto(api + "/#/recordings");
  const row = page.locator(`[data-testid="recording-row"][data-path="${path}"]`);
  await row.waitFor({ timeout: 15000 });
  await row.locator("a").first().click();
  await page.locator('[data-testid="segment-row"]').first().waitFor({ timeout: 10000 });
  result.segments = await page.locator('[data-testid="segment-row"]').count();
  const video = page.locator('[data-testid="recording-player"]');
  await video.waitFor({ timeout: 10000 });
  // The user presses play (a click on the video's own control is not addressable: play()).
  await video.evaluate((v) => { v.muted = true; v.play().catch(() => {}); });
  try {
    await page.waitForFunction(() => {
      const v = document.querySelector('[data-testid="recording-player"]');
      return v && v.getVideoPlaybackQuality().totalVideoFrames >= 10;
    }, null, { timeout: 20000 });
  } catch (e) {
    result.recording_video = await video.evaluate((v) => ({ src: v.currentSrc, error: v.error && v.error.message, readyState: v.readyState, paused: v.paused, time: v.currentTime }));
    throw e;
  }
  result.recording_frames = await video.evaluate((v) => v.getVideoPlaybackQuality().totalVideoFrames);
  await shot(page, "recordings");
  await axe(page, "recordings");
  await page.goto(api + "/#/server");
  await page.locator('[data-testid="server-version"]').waitFor({ timeout: 10000 });
  result.version = await page.locator('[data-testid="server-version"]').innerText();
  await page.locator('[data-testid="server-cpu"]').waitFor({ timeout: 10000 });
  result.memory = await page.locator('[data-testid="server-memory"]').innerText();
  await page.locator('[data-testid="event-row"][data-type="published"]').first().waitFor({ timeout: 10000 });
  result.event_types = [...new Set(await page.locator('[data-testid="event-row"]').evaluateAll((rs) => rs.map((r) => r.dataset.type)))];
  await shot(page, "server");
  await axe(page, "server");
}

async function login(browser) {
  const [path, user, pass] = args;
  const { context, page } = await newPage(browser);
  const apiCalls = [];
  page.on("response", (r) => {
    if (r.url().includes("/v1/")) apiCalls.push(`${r.request().method()} ${new URL(r.url()).pathname} ${r.status()}`);
  });
  await page.goto(api + "/");
  await page.locator('[data-testid="login"]').waitFor({ timeout: 10000 });
  await sleep(1500);
  result.unauth_text = await page.locator("body").innerText();
  result.unauth_nav = await page.locator('[data-testid="nav-paths"]').count();
  result.unauth_rows = await page.locator('[data-testid="path-row"]').count();
  result.unauth_calls = apiCalls.slice();
  await shot(page, "login");
  await axe(page, "login");
  await page.locator("#login-user").fill(user);
  await page.locator("#login-pass").fill(pass + "-wrong");
  await page.locator('[data-testid="login"] button[type="submit"]').click();
  await page.locator('[data-testid="login-error"]').waitFor({ timeout: 10000 });
  result.wrong_error = await page.locator('[data-testid="login-error"]').innerText();
  await page.locator("#login-pass").fill(pass);
  await page.locator('[data-testid="login"] button[type="submit"]').click();
  await page.locator(`[data-testid="path-row"][data-path="${path}"]`).waitFor({ timeout: 15000 });
  const cookie = (await context.cookies()).find((c) => c.name === "sluice_session");
  result.cookie = cookie ? { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite, path: cookie.path } : null;
  // A change without the login's CSRF token is refused, even with the cookie.
  result.csrf_missing_status = await page.evaluate(async (p) => {
    const r = await fetch("/v1/player-links", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ path: p }) });
    return r.status;
  }, path);
  // The protected path plays in the embedded player with the short-lived link.
  await page.goto(api + `/#/paths/${path}`);
  await page.locator(`[data-testid="path-page"][data-path="${path}"]`).waitFor({ timeout: 10000 });
  result.player = await playerFrames(page, 2000);
  await page.locator('[data-testid="logout"]').click();
  await page.locator('[data-testid="login"]').waitFor({ timeout: 10000 });
  result.after_logout_me = await page.evaluate(async () => (await fetch("/v1/me", { headers: { "x-requested-with": "t" } })).status);
}

const browser = await launchChromium();
try {
  const run = { live, manage, records, login }[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}`);
  await run(browser);
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.errors.push(String(e && e.stack ? e.stack : e).slice(0, 2000));
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
