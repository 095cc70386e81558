// The Paths page (#/): every live path from the state stream, one card each: state, publisher,
// media, bitrate with its sparkline, viewers, health warnings and outputs.
import { html } from "htm/preact";
import { state, history } from "../stream.js";
import { href } from "../router.js";
import * as fmt from "../format.js";
import { Chart } from "../components/chart.js";
import { Badge, Empty } from "../components/ui.js";
import { Warnings } from "../components/warnings.js";
import { listener } from "../urls.js";

const SPARK = [{ label: "Bitrate in", color: "--chart-1", fill: true }];

export function pathState(p) {
  return p.online ? ["online", "Online"] : ["grace", "Offline (grace period)"];
}

export function Viewers({ path }) {
  const by = Object.entries(path.readers_by_protocol || {}).filter(([, n]) => n > 0);
  const hls = path.hls && path.hls.clients_last_minute;
  return html`<span data-testid="path-viewers">
    ${by.length || hls
      ? [
          ...by.map(([proto, n]) => html`<span class="chip">${proto} ${n}</span>`),
          hls ? html`<span class="chip" title="distinct HLS/DASH clients over the last minute">hls ${hls}</span>` : null,
        ]
      : html`<span class="muted">none</span>`}
  </span>`;
}

export function Outputs({ path }) {
  const items = [];
  if (path.hls) items.push(["HLS", "live"]);
  if (path.recording) items.push(["Recording", path.recording.state]);
  (path.pushes || []).forEach((p) => items.push([`Push ${p.url}`, p.state]));
  if (path.transcode) {
    const names = (path.transcode.renditions || []).map((r) => r.slice(r.lastIndexOf("~") + 1));
    items.push([`Transcode${names.length ? ` (${names.join(", ")})` : ""}`, path.transcode.state]);
  }
  if (!items.length) return html`<span class="muted">none</span>`;
  return html`<ul class="outputs">
    ${items.map(([label, st]) => html`<li><span class="output-name">${label}</span> <${Badge} state=${st} /></li>`)}
  </ul>`;
}

function PathCard({ path, sessions, version, now }) {
  const [st, stText] = pathState(path);
  const pub = path.publisher && sessions.find((s) => s.id === path.publisher.session);
  const video = (path.tracks || []).find((t) => t.kind === "video");
  const audio = (path.tracks || []).find((t) => t.kind === "audio");
  const h = history.paths.get(path.name) || { t: [], bps: [] };
  return html`<article class="card path-card" data-testid="path-row" data-path=${path.name}>
    <header class="card-head">
      <h2><a href=${href("paths", path.name)}>${path.name}</a></h2>
      <${Badge} state=${st} text=${stText} />
      <${Warnings} path=${path} />
    </header>
    <div class="path-grid">
      <div>
        <div class="k">Publisher</div>
        <div>
          ${path.publisher
            ? html`<strong>${path.publisher.protocol}</strong>
                ${pub && pub.remote && html` <span class="muted">from ${pub.remote}</span>`}
                ${pub && html`<div class="muted">up ${fmt.duration(fmt.since(pub.started_at, now))}</div>`}`
            : html`<span class="muted">waiting for the publisher</span>`}
        </div>
      </div>
      <div>
        <div class="k">Video</div>
        <div data-testid="path-video">
          ${video
            ? html`${video.codec} ${fmt.resolution(video)}
                ${video.frame_rate ? html` <span class="muted">${fmt.number(video.frame_rate, 1)} fps</span>` : null}`
            : html`<span class="muted">none</span>`}
        </div>
      </div>
      <div>
        <div class="k">Audio</div>
        <div data-testid="path-audio">
          ${audio
            ? html`${audio.codec}
                ${audio.sample_rate ? html` <span class="muted">${audio.sample_rate / 1000} kHz</span>` : null}`
            : html`<span class="muted">none</span>`}
        </div>
      </div>
      <div>
        <div class="k">Viewers</div>
        <div><${Viewers} path=${path} /></div>
      </div>
      <div class="bitrate-cell">
        <div class="k">Bitrate in</div>
        <div data-testid="path-bitrate" data-bps=${path.bitrate_in ?? 0}>${fmt.bitrate(path.bitrate_in)}</div>
        <${Chart} label=${`Bitrate in of ${path.name}, last 5 minutes`} series=${SPARK} data=${[h.t, h.bps]}
          version=${version} height=${36} sparkline fmt=${fmt.bitrate} />
      </div>
      <div class="outputs-cell">
        <div class="k">Outputs</div>
        <${Outputs} path=${path} />
      </div>
    </div>
  </article>`;
}

function EmptyPaths() {
  const rtmp = listener(state.value && state.value.server, "rtmp", "rtmp", "rtmps");
  const url = `${rtmp ? rtmp.base : "rtmp://HOST:1935"}/live/cam1`;
  return html`<${Empty}>
    <p><strong>Nothing is live.</strong> A path appears here as soon as something publishes to it.</p>
    <p>Publish a test stream with ffmpeg:</p>
    <pre class="cmd"><code>ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -f flv ${url}</code></pre>
    <p class="muted">Or in OBS: Settings → Stream → Custom, server <code>${url.replace(/\/cam1$/, "")}</code>, stream key <code>cam1</code>.</p>
  <//>`;
}

export function PathsPage() {
  const snap = state.value;
  const now = snap ? Date.parse(snap.time) || Date.now() : Date.now();
  return html`<section>
    <div class="page-head">
      <h1>Paths</h1>
      ${snap && html`<p class="muted">${snap.paths.length} live · ${snap.server.sessions ?? snap.sessions_total} sessions</p>`}
    </div>
    ${!snap
      ? html`<p class="muted" aria-busy="true">Waiting for the server…</p>`
      : snap.paths.length === 0
        ? html`<${EmptyPaths} />`
        : html`<div class="path-list">
            ${snap.paths.map(
              (p) => html`<${PathCard} key=${p.name} path=${p} sessions=${snap.sessions} version=${snap.time} now=${now} />`,
            )}
          </div>`}
  </section>`;
}
