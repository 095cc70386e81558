// The page of one path (#/paths/NAME): player and snapshot, publish/play URLs, tracks, health,
// bitrate history, the sessions on the path with their link statistics, and its outputs
// (recording, transcode renditions, push destinations with add/restart/remove).
import { html } from "htm/preact";
import { useEffect, useMemo, useState } from "preact/hooks";
import * as api from "../api.js";
import { state, history } from "../stream.js";
import { href } from "../router.js";
import * as fmt from "../format.js";
import { playerUrls, streamUrls } from "../urls.js";
import { usePlayerQuery } from "../playerlink.js";
import { Chart } from "../components/chart.js";
import { Player } from "../components/player.js";
import { Alert, Badge, CopyField, Empty, Facts, TableWrap } from "../components/ui.js";
import { Warnings } from "../components/warnings.js";
import { KickButton } from "../components/kick.js";
import { pathState, Viewers } from "./paths.js";

const BITRATE = [{ label: "Bitrate in", color: "--chart-1", fill: true }];
const RTT_SRT = [{ label: "RTT", color: "--chart-1" }];
const RTT_WEBRTC = [
  { label: "RTT", color: "--chart-1" },
  { label: "Jitter", color: "--chart-3" },
];
const LOSS_SRT = [
  { label: "Lost", color: "--chart-2" },
  { label: "Retransmitted", color: "--chart-3" },
];
const LOSS_WEBRTC = [{ label: "Lost", color: "--chart-2" }];
const ms = (v) => `${fmt.number(v, 1)} ms`;
const perSecond = (v) => `${fmt.number(v, 1)}/s`;

function Media({ name, server }) {
  const [q, error] = usePlayerQuery(name);
  const [tick, setTick] = useState(0);
  // The player gets the URLs without the link (it adds the current one when it connects); the
  // snapshot is loaded again with each new link.
  const ready = q !== null && !!server;
  const version = server && server.version;
  const bare = useMemo(() => (ready ? playerUrls(server, name, "") : null), [ready, version, name]);
  const urls = useMemo(() => (ready ? playerUrls(server, name, q) : null), [ready, version, name, q]);
  return html`<section class="media" aria-labelledby="media-h">
    <h2 id="media-h" class="visually-hidden">Picture</h2>
    <${Alert} error=${error} />
    <div class="media-grid">
      <${Player} urls=${bare} query=${q} />
      ${urls && urls.snapshot
        ? html`<figure class="snapshot">
            <img data-testid="snapshot" src=${`${urls.snapshot}&t=${tick}`} width="640" height="360"
              alt=${`Snapshot of ${name}`} />
            <figcaption>
              <span>Snapshot</span>
              <button type="button" class="small" onClick=${() => setTick(Date.now())}>Refresh snapshot</button>
            </figcaption>
          </figure>`
        : null}
    </div>
  </section>`;
}

function Urls({ server, name }) {
  const { publish, play } = streamUrls(server, name);
  return html`<section class="card" aria-labelledby="urls-h">
    <h2 id="urls-h">URLs</h2>
    <div class="two-col">
      <div>
        <h3>Publish</h3>
        ${publish.map(([label, url]) => html`<${CopyField} label=${label} value=${url} />`)}
      </div>
      <div>
        <h3>Play</h3>
        ${play.map(([label, url]) => html`<${CopyField} label=${label} value=${url} />`)}
      </div>
    </div>
    <p class="muted small-text">A path with publish or read credentials needs them added to these URLs.</p>
  </section>`;
}

function Tracks({ path }) {
  const rows = [...(path.tracks || []), ...(path.derived || []).map((t) => ({ ...t, derived: true }))];
  return html`<section class="card" aria-labelledby="tracks-h">
    <h2 id="tracks-h">Tracks</h2>
    <${TableWrap} label="Tracks">
      <table class="stack">
        <thead>
          <tr><th scope="col">Track</th><th scope="col">Codec</th><th scope="col">Profile / level</th>
            <th scope="col">Format</th><th scope="col">Frame rate</th><th scope="col">Keyframes</th>
            <th scope="col" class="num">Bitrate</th></tr>
        </thead>
        <tbody>
          ${rows.map(
            (t) => html`<tr>
              <td data-label="Track">${t.id} ${t.kind}${t.derived ? html` <span class="muted">(derived)</span>` : null}</td>
              <td data-label="Codec">${t.codec} <span class="muted">${t.codec_string || ""}</span></td>
              <td data-label="Profile / level">${[t.profile, t.level].filter(Boolean).join(" / ") || "—"}</td>
              <td data-label="Format">${t.kind === "video" ? fmt.resolution(t) || "—" : t.sample_rate ? `${t.sample_rate} Hz, ${t.channels} ch` : "—"}</td>
              <td data-label="Frame rate">${t.frame_rate ? `${fmt.number(t.frame_rate, 2)} fps` : "—"}</td>
              <td data-label="Keyframes">${t.keyframe_interval_s ? `every ${fmt.number(t.keyframe_interval_s, 2)} s (${fmt.number(t.gop_frames, 1)} frames)` : "—"}</td>
              <td data-label="Bitrate" class="num">${fmt.bitrate(t.bitrate)}</td>
            </tr>`,
          )}
        </tbody>
      </table>
    <//>
  </section>`;
}

function Health({ health }) {
  if (!health) {
    return html`<section class="card" aria-labelledby="health-h"><h2 id="health-h">Health</h2>
      <p class="muted">Health checks are off for this path.</p></section>`;
  }
  const h = health;
  const db = (v) => (v === null || v === undefined ? "—" : `${fmt.number(v, 1)} dBFS`);
  return html`<section class="card" aria-labelledby="health-h">
    <h2 id="health-h">Health</h2>
    <${Facts} items=${[
      ["Stream", html`<${Badge} state=${h.stream} />`],
      ["Stalls", h.stalls],
      ["Last frame", h.last_frame_ms === undefined ? undefined : `${h.last_frame_ms} ms ago`],
      ["Video", html`<${Badge} state=${h.video} /> ${h.video_codec || ""}`],
      ["Video fps", h.video_fps === undefined ? undefined : fmt.number(h.video_fps, 1)],
      ["Keyframe interval", h.keyframe_interval_s == null ? null : `${fmt.number(h.keyframe_interval_s, 2)} s`],
      ["GOP", h.gop_frames == null ? null : `${fmt.number(h.gop_frames, 1)} frames`],
      ["Audio", html`<${Badge} state=${h.audio} /> ${h.audio_codec || ""}`],
      ["Silence", html`<${Badge} state=${h.silence} />${h.silence_detail ? html` <span class="muted">${h.silence_detail}</span>` : null}`],
      ["Audio level", db(h.audio_level_db)],
      ["Audio peak", db(h.audio_peak_db)],
      ["Quiet for", h.quiet_s == null ? null : `${fmt.number(h.quiet_s, 1)} s`],
      ["Audio decode errors", h.audio_decode_errors],
      ["Bitrate in", fmt.bitrate(h.bitrate_in)],
      ["Video bitrate", fmt.bitrate(h.video_bitrate_in)],
      ["Audio bitrate", fmt.bitrate(h.audio_bitrate_in)],
      ["Timestamps", html`<${Badge} state=${h.timestamps} /> ${h.timestamp_jumps ? `${h.timestamp_jumps} jumps` : ""}`],
    ]} />
  </section>`;
}

function Publisher({ path, pub, now }) {
  return html`<section class="card" aria-labelledby="pub-h">
    <h2 id="pub-h">Publisher</h2>
    ${path.publisher
      ? html`<${Facts} items=${[
            ["Protocol", path.publisher.protocol],
            ["Session", path.publisher.session],
            ["Remote", pub ? pub.remote : null],
            ["Up for", pub ? fmt.duration(fmt.since(pub.started_at, now)) : null],
            ["Bitrate in", fmt.bitrate(path.bitrate_in)],
            ["Received", fmt.bytes(path.bytes_in)],
            ["Frames", fmt.number(path.frames_in)],
            ["Restarts / codec changes", path.epoch],
          ]} />
          ${pub && html`<${KickButton} session=${pub} label="Disconnect publisher" />`}`
      : html`<p class="muted">No publisher: the path waits through its grace period.</p>`}
  </section>`;
}

function Readers({ sessions }) {
  return html`<section class="card" aria-labelledby="readers-h">
    <h2 id="readers-h">Sessions on this path</h2>
    ${sessions.length === 0
      ? html`<p class="muted">No readers.</p>`
      : html`<table class="stack">
          <thead>
            <tr><th scope="col">Id</th><th scope="col">Protocol</th><th scope="col">Role</th><th scope="col">Remote</th>
              <th scope="col" class="num">Bitrate out</th><th scope="col" class="num">Dropped</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr>
          </thead>
          <tbody>
            ${sessions.map(
              (s) => html`<tr key=${s.id} data-testid="reader-row" data-session=${s.id}>
                <td data-label="Id">${s.id}</td>
                <td data-label="Protocol">${s.protocol}</td>
                <td data-label="Role">${s.role}</td>
                <td data-label="Remote">${s.remote || "—"}</td>
                <td data-label="Bitrate out" class="num">${fmt.bitrate(s.bitrate_out)}</td>
                <td data-label="Dropped" class="num">${fmt.number(s.frames_dropped)}</td>
                <td><${KickButton} session=${s} /></td>
              </tr>`,
            )}
          </tbody>
        </table>`}
  </section>`;
}

function LinkCharts({ sessions, version }) {
  const linked = sessions.filter((s) => s.link && history.sessions.has(s.id));
  if (!linked.length) return null;
  return html`<section class="card" aria-labelledby="links-h">
    <h2 id="links-h">Link statistics</h2>
    ${linked.map((s) => {
      const h = history.sessions.get(s.id);
      const webrtc = s.protocol === "webrtc";
      return html`<div class="link-block">
        <h3>Session ${s.id} · ${s.protocol} ${s.role} ${s.remote ? `· ${s.remote}` : ""}</h3>
        <${Facts} items=${[
          ["State", s.link.state],
          ["RTT", s.link.rtt_ms == null ? null : ms(s.link.rtt_ms)],
          ["Packets lost", s.link.packets_lost],
          [webrtc ? "Jitter" : "Retransmitted", webrtc ? (s.link.jitter_ms == null ? null : ms(s.link.jitter_ms)) : s.link.packets_retransmitted],
          webrtc ? ["PLIs", s.link.plis] : ["Latency", s.link.latency_ms == null ? undefined : `${s.link.latency_ms} ms`],
        ]} />
        <div class="two-col">
          <${Chart} label=${`Session ${s.id} round-trip time`} series=${webrtc ? RTT_WEBRTC : RTT_SRT}
            data=${webrtc ? [h.t, h.rtt, h.jitter] : [h.t, h.rtt]} version=${version} height=${140} fmt=${ms} />
          <${Chart} label=${`Session ${s.id} packet loss`} series=${webrtc ? LOSS_WEBRTC : LOSS_SRT}
            data=${webrtc ? [h.t, h.lost] : [h.t, h.lost, h.retrans]} version=${version} height=${140} fmt=${perSecond} />
        </div>
      </div>`;
    })}
  </section>`;
}

function Recording({ path }) {
  const r = path.recording;
  return html`<div class="output-block">
    <h3>Recording</h3>
    ${r
      ? html`<${Facts} items=${[
            ["State", html`<${Badge} state=${r.state} />`],
            ["File", r.file],
            ["Written", fmt.bytes(r.bytes_written)],
            ["Segments completed", r.segments_completed],
            ["Dropped fragments", r.dropped_fragments],
            ["Last error", r.last_error ? `${r.last_error} (${fmt.dateTime(r.last_error_at)})` : null],
          ]} />
          <p><a href=${href("recordings", path.name)}>Recordings of ${path.name}</a></p>`
      : html`<p class="muted">Not recorded.</p>`}
  </div>`;
}

function Transcode({ path }) {
  const t = path.transcode;
  if (!t) return null;
  return html`<div class="output-block">
    <h3>Transcode</h3>
    <${Facts} items=${[
      ["State", html`<${Badge} state=${t.state} />`],
      ["Restarts", t.restarts],
      ["Frames out", fmt.number(t.frames_out)],
      ["Encoder pid", t.pid],
      ["Last error", t.last_error],
    ]} />
    <p>Renditions:</p>
    <ul>
      ${(t.renditions || []).map((r) => html`<li><a href=${href("paths", r)}>${r}</a></li>`)}
    </ul>
  </div>`;
}

/** Merge the listed destinations with the live figures of the stream (matched by id). */
function mergePushes(items, live) {
  return items.map((p) => ({ ...p, ...((live || []).find((l) => l.id === p.id) || {}) }));
}

function Pushes({ name, live }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const signature = (live || []).map((p) => `${p.url} ${p.state} ${p.reconnects} ${p.last_error_at}`).join("|");
  const load = () =>
    api.listPushes(name).then(
      (r) => setList(r),
      (e) => (e.status === 404 ? setList({ items: [], table: null }) : setError(e.message)),
    );
  useEffect(() => {
    load();
  }, [name, signature]);

  const act = async (fn) => {
    setBusy(true);
    setError("");
    try {
      await fn();
      await load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  const add = (e) => {
    e.preventDefault();
    const input = e.currentTarget.url;
    act(async () => {
      await api.addPush(name, input.value.trim());
      input.value = "";
    });
  };
  const items = list ? mergePushes(list.items, live) : [];
  return html`<div class="output-block">
    <h3>Push destinations</h3>
    ${list && list.table && html`<p class="muted small-text">From the configuration table <code>${list.table}</code>.</p>`}
    ${list && items.length === 0 && html`<p class="muted">No destinations.</p>`}
    ${items.length > 0 &&
    html`<table class="stack">
      <thead>
        <tr><th scope="col">Destination</th><th scope="col">State</th><th scope="col" class="num">Bitrate</th>
          <th scope="col">Up for</th><th scope="col" class="num">Reconnects</th><th scope="col">Last error</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th></tr>
      </thead>
      <tbody>
        ${items.map(
          (p) => html`<tr key=${p.id} data-testid="push-row" data-push-id=${p.id}>
            <td data-label="Destination"><code class="wrap">${p.url}</code></td>
            <td data-label="State"><${Badge} state=${p.state} testid="push-state" /></td>
            <td data-label="Bitrate" class="num">${fmt.bitrate(p.bitrate)}</td>
            <td data-label="Up for">${p.uptime_seconds == null ? "—" : fmt.duration(p.uptime_seconds)}</td>
            <td data-label="Reconnects" class="num">${p.reconnects ?? "—"}</td>
            <td data-label="Last error">${p.last_error ? html`${p.last_error} <span class="muted">(${fmt.clock(p.last_error_at)})</span>` : "—"}</td>
            <td class="actions">
              <button type="button" class="small" data-testid="push-restart" disabled=${busy}
                aria-label=${`Restart ${p.url}`} onClick=${() => act(() => api.restartPush(name, p.id))}>Restart</button>
              <button type="button" class="small danger" data-testid="push-remove" disabled=${busy}
                aria-label=${`Remove ${p.url}`}
                onClick=${() => confirm(`Remove the destination ${p.url}?`) && act(() => api.removePush(name, p.id))}>Remove</button>
            </td>
          </tr>`,
        )}
      </tbody>
    </table>`}
    <form class="inline-form" onSubmit=${add}>
      <label for="push-url">Add destination</label>
      <input id="push-url" name="url" type="text" inputmode="url" data-testid="push-url" required placeholder="rtmp://a.rtmp.youtube.com/live2/KEY"
        autocomplete="off" spellcheck="false" />
      <button type="submit" data-testid="push-add" disabled=${busy}>Add</button>
    </form>
    <${Alert} error=${error} testid="push-error" />
  </div>`;
}

export function PathPage({ name }) {
  const snap = state.value;
  const path = snap && snap.paths.find((p) => p.name === name);
  const sessions = snap ? snap.sessions.filter((s) => s.path === name) : [];
  const pub = path && path.publisher && sessions.find((s) => s.id === path.publisher.session);
  const others = sessions.filter((s) => !(path && path.publisher && s.id === path.publisher.session));
  const now = snap ? Date.parse(snap.time) || Date.now() : Date.now();
  const h = history.paths.get(name) || { t: [], bps: [] };
  useEffect(() => {
    document.title = `${name} · Sluice`;
    return () => (document.title = "Sluice");
  }, [name]);
  if (!snap) return html`<p class="muted" aria-busy="true">Waiting for the server…</p>`;
  const [st, stText] = path ? pathState(path) : ["offline", "Not live"];
  return html`<div data-testid="path-page" data-path=${name}>
    <div class="page-head">
      <p class="crumbs"><a href="#/">Paths</a> /</p>
      <h1>${name}</h1>
      <${Badge} state=${st} text=${stText} />
      ${path && html`<${Warnings} path=${path} />`}
    </div>
    ${path
      ? html`<${Media} name=${name} server=${snap.server} />`
      : html`<${Empty}><p>Nothing is published on <strong>${name}</strong> now. Publish to one of the URLs below.</p><//>`}
    ${path &&
    html`<div class="grid-2">
        <${Publisher} path=${path} pub=${pub} now=${now} />
        <section class="card" aria-labelledby="bitrate-h">
          <h2 id="bitrate-h">Bitrate in</h2>
          <p class="big" data-testid="path-bitrate" data-bps=${path.bitrate_in ?? 0}>${fmt.bitrate(path.bitrate_in)}</p>
          <${Chart} label="Bitrate in, last 5 minutes" series=${BITRATE} data=${[h.t, h.bps]} version=${snap.time} fmt=${fmt.bitrate} />
          <p class="muted small-text">Viewers: <${Viewers} path=${path} /></p>
        </section>
      </div>
      <${Tracks} path=${path} />
      <${Health} health=${path.health} />
      <${Readers} sessions=${others} />
      <${LinkCharts} sessions=${sessions} version=${snap.time} />`}
    <section class="card" aria-labelledby="outputs-h">
      <h2 id="outputs-h">Outputs</h2>
      ${path && html`<${Recording} path=${path} /><${Transcode} path=${path} />`}
      <${Pushes} name=${name} live=${path && path.pushes} />
    </section>
    <${Urls} server=${snap.server} name=${name} />
  </div>`;
}
