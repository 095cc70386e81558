// Drives Debian's headless Chromium (through playwright-core) for the WebRTC integration tests.
// Prints one JSON line per result on stdout; progress lines start with "#".
//
//   node webrtc.mjs watch   PLAYER_URL SECONDS   the WHEP player page: video/audio stats
//   node webrtc.mjs publish PUBLISH_URL SECONDS  the WHIP publish page with a fake camera and mic
//   node webrtc.mjs glass   BASE_URL PATH SECONDS  WHIP a canvas clock, WHEP it back, read the
//                                                  clock off decoded frames: glass-to-glass delay
//   node webrtc.mjs republish BASE_URL PATH SECONDS  WHIP publish and WHEP watch, then restart the
//                                                  publisher (leave its page, come back): how long
//                                                  until the viewer decodes frames again
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHROMIUM_ARGS } from '../web/browser.mjs';

const [mode, url, a3, a4] = process.argv.slice(2);

const args = [
  ...CHROMIUM_ARGS,
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
];

const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'sluice-chromium-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args,
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = (o) => console.log(JSON.stringify(o));

// Inbound RTP stats of the page's window.pc, summed per kind.
async function inbound(page) {
  return page.evaluate(async () => {
    const r = { video: null, audio: null, state: window.pc ? window.pc.connectionState : 'none' };
    if (!window.pc) return r;
    const stats = await window.pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') {
        r.video = { framesDecoded: s.framesDecoded || 0, width: s.frameWidth || 0, height: s.frameHeight || 0,
          packetsReceived: s.packetsReceived || 0, packetsLost: s.packetsLost || 0, nackCount: s.nackCount || 0,
          framesDropped: s.framesDropped || 0, framesReceived: s.framesReceived || 0, pliCount: s.pliCount || 0,
          jitterBufferDelay: s.jitterBufferDelay || 0, jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0 };
      } else if (s.kind === 'audio') {
        r.audio = { packetsReceived: s.packetsReceived || 0, audioLevel: s.audioLevel || 0,
          totalAudioEnergy: s.totalAudioEnergy || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
          concealedSamples: s.concealedSamples || 0, packetsDiscarded: s.packetsDiscarded || 0,
          jitterBufferDelay: s.jitterBufferDelay || 0, jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
          codec: s.codecId || '' };
      }
    });
    stats.forEach((s) => {
      if (r.audio && s.type === 'codec' && s.id === r.audio.codec) r.audio.codec = s.mimeType;
    });
    return r;
  });
}

try {
  if (mode === 'watch') {
    const page = await context.newPage();
    page.on('console', (m) => console.log(`# console: ${m.text()}`));
    const t0 = Date.now();
    await page.goto(url);
    let firstFrameMs = null;
    let last = null;
    const end = t0 + Number(a3) * 1000;
    while (Date.now() < end) {
      last = await inbound(page);
      if (firstFrameMs === null && last.video && last.video.framesDecoded > 0) firstFrameMs = Date.now() - t0;
      await sleep(250);
    }
    out({ ...last, firstFrameMs });
  } else if (mode === 'restart') {
    // Watch, then restart ICE through a WHEP PATCH (RFC 9725 4.4) and keep watching.
    const page = await context.newPage();
    await page.goto(url);
    const until = async (pred, ms) => {
      const end = Date.now() + ms;
      while (Date.now() < end) { const r = await inbound(page); if (pred(r)) return r; await sleep(200); }
      return inbound(page);
    };
    const before = await until((r) => r.video && r.video.framesDecoded > 30, 15000);
    const restart = await page.evaluate(async () => {
      const pc = window.pc;
      pc.restartIce();
      const offer = await pc.createOffer({ iceRestart: true });
      await pc.setLocalDescription(offer);
      const ufrag = offer.sdp.match(/a=ice-ufrag:(.*)\r\n/)[1];
      const pwd = offer.sdp.match(/a=ice-pwd:(.*)\r\n/)[1];
      const res = await fetch(window.whepSession, { method: 'PATCH',
        headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': '*' },
        body: `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\n` });
      const frag = await res.text();
      if (res.status !== 200) return { status: res.status, frag };
      const nu = frag.match(/a=ice-ufrag:(.*)\r\n/)[1];
      const np = frag.match(/a=ice-pwd:(.*)\r\n/)[1];
      const sdp = pc.remoteDescription.sdp.replace(/a=ice-ufrag:.*\r\n/g, `a=ice-ufrag:${nu}\r\n`)
        .replace(/a=ice-pwd:.*\r\n/g, `a=ice-pwd:${np}\r\n`);
      await pc.setRemoteDescription({ type: 'answer', sdp });
      return { status: res.status, frag };
    });
    console.log(`# restart: ${JSON.stringify(restart)}`);
    await sleep(Number(a3) * 1000);
    const after = await inbound(page);
    out({ restart: restart.status, before: before.video ? before.video.framesDecoded : 0,
      after: after.video ? after.video.framesDecoded : 0, state: after.state });
  } else if (mode === 'publish') {
    const page = await context.newPage();
    page.on('console', (m) => console.log(`# console: ${m.text()}`));
    await page.goto(url + (url.includes('?') ? '&' : '?') + 'autostart');
    const end = Date.now() + Number(a3) * 1000;
    let state = 'none';
    while (Date.now() < end) {
      const s = await page.evaluate(() => (window.pc ? window.pc.connectionState : 'none'));
      if (s !== state) { state = s; console.log(`# state ${s}`); }
      await sleep(250);
    }
    const sent = await page.evaluate(async () => {
      const r = {};
      (await window.pc.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp') r[s.kind] = { packetsSent: s.packetsSent, framesEncoded: s.framesEncoded || 0, encoder: s.encoderImplementation || '' };
      });
      return r;
    });
    out({ state, sent });
  } else if (mode === 'republish') {
    const base = url;
    const path = a3;
    const seconds = Number(a4);
    const pubUrl = `${base}/${path}/publish?autostart`;
    const pub = await context.newPage();
    pub.on('console', (m) => console.log(`# publisher console: ${m.text()}`));
    const pubState = () => pub.evaluate(() => (window.pc ? window.pc.connectionState : 'none'));
    const waitPub = async (ms) => {
      const end = Date.now() + ms;
      while (Date.now() < end) { if ((await pubState()) === 'connected') return true; await sleep(20); }
      return false;
    };
    await pub.goto(pubUrl);
    if (!(await waitPub(15000))) throw new Error('the publisher did not connect');
    const view = await context.newPage();
    view.on('console', (m) => console.log(`# viewer console: ${m.text()}`));
    await view.goto(`${base}/${path}/`);
    const frames = async () => { const r = await inbound(view); return r.video ? r.video.framesDecoded : 0; };
    let end = Date.now() + 15000;
    while (Date.now() < end && (await frames()) < 30) await sleep(200);
    const before = await frames();
    // Restart the publisher: leaving its page DELETEs its session (pagehide), then it comes back.
    await pub.goto('about:blank');
    await sleep(1500);
    const stalled = await frames();
    await pub.goto(pubUrl);
    if (!(await waitPub(15000))) throw new Error('the publisher did not reconnect');
    const connectedAt = Date.now();
    console.log(`# publisher back after a stall at ${stalled} frames`);
    let resumeMs = null;
    end = Date.now() + 10000;
    while (Date.now() < end) {
      if ((await frames()) > stalled) { resumeMs = Date.now() - connectedAt; break; }
      await sleep(20);
    }
    await sleep(seconds * 1000);
    const last = await inbound(view);
    out({ before, stalled, resumeMs, after: last.video ? last.video.framesDecoded : 0, state: last.state,
      publisher: await pubState() });
  } else if (mode === 'glass') {
    const base = url;
    const path = a3;
    const seconds = Number(a4);
    // Publisher: a 640x360 canvas showing the clock (ms mod 2^16) as 16 black/white squares.
    const pub = await context.newPage();
    await pub.goto(`${base}/${path}/publish`);
    await pub.evaluate(async () => {
      const c = document.createElement('canvas');
      c.width = 640; c.height = 360;
      const g = c.getContext('2d');
      const draw = () => {
        const t = Math.floor(performance.timeOrigin + performance.now()) % 65536;
        g.fillStyle = '#808080'; g.fillRect(0, 0, 640, 360);
        for (let i = 0; i < 16; i++) {
          g.fillStyle = (t >> i) & 1 ? '#fff' : '#000';
          g.fillRect(16 + (i % 8) * 76, 60 + Math.floor(i / 8) * 130, 64, 110);
        }
        requestAnimationFrame(draw);
      };
      draw();
      setInterval(draw, 10);
      const stream = c.captureStream(30);
      const pc = new RTCPeerConnection();
      window.pc = pc;
      const t = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly' });
      const h264 = RTCRtpSender.getCapabilities('video').codecs.filter((x) => x.mimeType === 'video/H264');
      t.setCodecPreferences(h264);
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const res = await fetch('whip', { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: offer.sdp });
      if (res.status !== 201) throw new Error(`WHIP ${res.status}: ${await res.text()}`);
      await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    });
    console.log('# publishing the canvas clock');
    await sleep(1500);
    // Viewer: the WHEP player page; read the clock off every decoded frame.
    const view = await context.newPage();
    view.on('console', (m) => console.log(`# console: ${m.text()}`));
    await view.goto(`${base}/${path}/`);
    const delays = await view.evaluate(async (seconds) => {
      const video = document.getElementById('video');
      const c = document.createElement('canvas');
      c.width = 640; c.height = 360;
      const g = c.getContext('2d', { willReadFrequently: true });
      const delays = [];
      await new Promise((resolve) => {
        const end = performance.now() + seconds * 1000;
        const onFrame = () => {
          if (performance.now() > end) return resolve();
          if (video.videoWidth === 640) {
            g.drawImage(video, 0, 0, 640, 360);
            const now = Math.floor(performance.timeOrigin + performance.now()) % 65536;
            let t = 0;
            for (let i = 0; i < 16; i++) {
              const px = g.getImageData(16 + (i % 8) * 76 + 32, 60 + Math.floor(i / 8) * 130 + 55, 1, 1).data;
              if (px[0] > 128) t |= 1 << i;
            }
            const d = (now - t + 65536) % 65536;
            if (d < 5000) delays.push(d);
          }
          video.requestVideoFrameCallback(onFrame);
        };
        video.requestVideoFrameCallback(onFrame);
        setTimeout(resolve, seconds * 1000 + 2000);
      });
      return delays;
    }, seconds);
    delays.sort((x, y) => x - y);
    const q = (p) => (delays.length ? delays[Math.min(delays.length - 1, Math.floor(p * delays.length))] : null);
    out({ frames: delays.length, p50: q(0.5), p95: q(0.95), min: q(0) });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} catch (e) {
  out({ error: String(e) });
  process.exitCode = 1;
} finally {
  await context.close();
}
