// The dashboard's live data: one EventSource on /v1/state/stream for the whole app (a snapshot of
// server, paths and sessions each second), with a fallback to polling /v1/server, /v1/paths and
// /v1/sessions every 2 s when the stream is not available. Keeps the last 5 minutes of history
// (per path bitrate in, per session link statistics, server CPU and memory) from the moment the
// dashboard was opened, whatever page is shown.
import { signal } from "@preact/signals";
import * as api from "./api.js";

const WINDOW_S = 300;
const POLL_MS = 2000;
/** Polls between two attempts to get the stream back. */
const RETRY_STREAM_POLLS = 15;

/** The latest snapshot: {time, server, paths, sessions, sessions_total}; null before the first. */
export const state = signal(null);
/** "live" while data arrives, "reconnecting" otherwise. */
export const conn = signal("reconnecting");

/**
 * History, as uPlot-ready columns of equal length (t in Unix seconds):
 * paths: name -> {t, bps}; sessions: id -> {t, rtt, lost, retrans, jitter} (lost and retrans
 * per second); server: {t, cpu, mem}.
 */
export const history = { paths: new Map(), sessions: new Map(), server: { t: [], cpu: [], mem: [] } };

function append(series, t, values) {
  series.t.push(t);
  for (const [k, v] of Object.entries(values)) series[k].push(v);
  const cut = series.t.findIndex((x) => x > t - WINDOW_S);
  if (cut > 0) for (const k of Object.keys(series)) if (Array.isArray(series[k])) series[k].splice(0, cut);
}

function forget(map, t) {
  for (const [key, series] of map) if (!series.t.length || series.t[series.t.length - 1] <= t - WINDOW_S) map.delete(key);
}

function record(snap) {
  const t = Date.parse(snap.time) / 1000 || Date.now() / 1000;
  for (const p of snap.paths) {
    if (!history.paths.has(p.name)) history.paths.set(p.name, { t: [], bps: [] });
    append(history.paths.get(p.name), t, { bps: p.bitrate_in ?? null });
  }
  for (const s of snap.sessions) {
    if (!s.link) continue;
    let h = history.sessions.get(s.id);
    if (!h) {
      h = { t: [], rtt: [], lost: [], retrans: [], jitter: [], last: null };
      history.sessions.set(s.id, h);
    }
    const prev = h.last;
    const dt = prev ? t - prev.t : 0;
    const rate = (key) => (prev && dt > 0 && s.link[key] != null ? Math.max(0, (s.link[key] - prev[key]) / dt) : null);
    append(h, t, {
      rtt: s.link.rtt_ms ?? null,
      lost: rate("packets_lost"),
      retrans: rate("packets_retransmitted"),
      jitter: s.link.jitter_ms ?? null,
    });
    h.last = { t, packets_lost: s.link.packets_lost, packets_retransmitted: s.link.packets_retransmitted };
  }
  const proc = snap.server && snap.server.process;
  if (proc) append(history.server, t, { cpu: proc.cpu_percent ?? null, mem: proc.memory_bytes ?? null });
  forget(history.paths, t);
  forget(history.sessions, t);
}

function ingest(snap) {
  record(snap);
  state.value = snap;
  conn.value = "live";
}

let source = null;
let pollTimer = null;
let polling = false;
let running = false;

function openStream() {
  source = new EventSource(api.STATE_STREAM_URL);
  source.onmessage = (m) => {
    let snap;
    try {
      snap = JSON.parse(m.data);
    } catch {
      return;
    }
    stopPolling();
    ingest(snap);
  };
  source.onerror = () => {
    conn.value = "reconnecting";
    // CLOSED: the server answered with an error status (no stream here, or signed out); the
    // browser does not retry then, polling takes over (and finds out about a sign-out).
    if (source && source.readyState === EventSource.CLOSED) {
      source.close();
      source = null;
      startPolling();
    }
  };
}

async function pollOnce() {
  try {
    const [server, paths, sessions] = await Promise.all([api.getServer(), api.getPaths(), api.getSessions()]);
    ingest({
      time: new Date().toISOString(),
      server,
      paths: paths.items,
      sessions: sessions.items,
      sessions_total: sessions.total,
    });
  } catch {
    conn.value = "reconnecting";
  }
}

function startPolling() {
  if (polling || !running) return;
  polling = true;
  let polls = 0;
  const tick = async () => {
    await pollOnce();
    if (!polling) return;
    polls++;
    if (polls % RETRY_STREAM_POLLS === 0 && !source) openStream();
    pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopPolling() {
  polling = false;
  clearTimeout(pollTimer);
}

/** Starts the live data (after sign-in). */
export function start() {
  if (running) return;
  running = true;
  openStream();
}

/** Stops it (on sign-out); the history is kept for a new sign-in within the window. */
export function stop() {
  running = false;
  stopPolling();
  if (source) source.close();
  source = null;
  conn.value = "reconnecting";
}
