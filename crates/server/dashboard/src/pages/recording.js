// The recordings of one path (#/recordings/NAME): a timeline of its segments (click to play from
// that moment), a player of the playback server's /get, a range form with a download link, the
// segment table with Delete, and the recorder's status. A new player link (one lasts an hour)
// goes into the player's URL at the moment it plays, so seeking keeps working.
import { html } from "htm/preact";
import { useEffect, useRef, useState } from "preact/hooks";
import * as api from "../api.js";
import { state } from "../stream.js";
import { href } from "../router.js";
import * as fmt from "../format.js";
import { playbackUrl } from "../urls.js";
import { usePlayerQuery } from "../playerlink.js";
import { Alert, Badge, Empty, Facts, TableWrap } from "../components/ui.js";

const MAX_PLAY_S = 86400;
/** What the player holds when the page opens: the last minutes recorded. */
const DEFAULT_BACK_MS = 5 * 60 * 1000;

/** Segments as {start, end} in ms, sorted, with the API item. */
function spans(segments) {
  return segments
    .map((s) => ({ seg: s, start: Date.parse(s.start), end: Date.parse(s.start) + s.duration * 1000 }))
    .sort((a, b) => a.start - b.start);
}

/** Where the player starts by default: DEFAULT_BACK_MS before the end, snapped into a segment. */
function defaultStart(list) {
  const t = list[list.length - 1].end - DEFAULT_BACK_MS;
  const seg = list.find((s) => s.end > t);
  return Math.max(seg.start, t);
}

/** The wall-clock time (ms) of `offset` seconds into a /get from `from` (gaps are closed up in it). */
function wallClock(list, from, offset) {
  let left = offset * 1000;
  let cursor = from;
  for (const s of list) {
    if (s.end <= cursor) continue;
    const begin = Math.max(s.start, cursor);
    if (left <= s.end - begin) return begin + left;
    left -= s.end - begin;
    cursor = s.end;
  }
  return cursor;
}

function Timeline({ list, playing, position, onPlay }) {
  const first = list[0].start;
  const last = list[list.length - 1].end;
  const span = Math.max(last - first, 1);
  const pct = (t) => `${((t - first) / span) * 100}%`;
  const at = (e) => {
    const box = e.currentTarget.closest(".timeline").getBoundingClientRect();
    return first + Math.min(Math.max((e.clientX - box.left) / box.width, 0), 1) * span;
  };
  return html`<div class="timeline-wrap">
    <div class="timeline" onClick=${(e) => e.target === e.currentTarget && onPlay(at(e))}>
      ${list.map(
        (s) => html`<button type="button" class=${`seg${s.seg.writing ? " writing" : ""}`}
          style=${{ left: pct(s.start), width: `max(3px, ${((s.end - s.start) / span) * 100}%)` }}
          aria-label=${`Play from ${fmt.dateTime(s.seg.start)} (${fmt.duration(s.seg.duration)})`}
          title=${`${fmt.dateTime(s.seg.start)} · ${fmt.duration(s.seg.duration)}`}
          onClick=${(e) => onPlay(e.detail > 0 ? at(e) : s.start)}></button>`,
      )}
      ${playing && position && html`<span class="playhead" style=${{ left: pct(position) }} aria-hidden="true"></span>`}
    </div>
    <div class="timeline-axis muted"><span>${fmt.dateTime(new Date(first).toISOString())}</span>
      <span>${fmt.dateTime(new Date(last).toISOString())}</span></div>
  </div>`;
}

function RangeForm({ server, name, first, query, onPlay }) {
  const [start, setStart] = useState(fmt.toLocalInput(new Date(first)));
  const [seconds, setSeconds] = useState(60);
  const iso = () => {
    const d = new Date(start);
    return Number.isNaN(d.getTime()) ? null : d.toISOString();
  };
  const download = iso() && playbackUrl(server, name, iso(), seconds, { format: "mp4", query });
  return html`<form class="range-form" onSubmit=${(e) => {
      e.preventDefault();
      if (iso()) onPlay(Date.parse(iso()), Number(seconds));
    }}>
    <div>
      <label for="range-start">Start (local time)</label>
      <input id="range-start" type="datetime-local" step="1" required value=${start} onInput=${(e) => setStart(e.currentTarget.value)} />
    </div>
    <div>
      <label for="range-duration">Duration (seconds)</label>
      <input id="range-duration" type="number" min="1" max=${MAX_PLAY_S} required value=${seconds}
        onInput=${(e) => setSeconds(e.currentTarget.value)} />
    </div>
    <div class="range-actions">
      <button type="submit">Play range</button>
      ${download && html`<a class="button" href=${download} download>Download MP4</a>`}
    </div>
  </form>`;
}

export function RecordingPage({ name }) {
  const [rec, setRec] = useState(null);
  const [error, setError] = useState("");
  const [notFound, setNotFound] = useState(false);
  const [query] = usePlayerQuery(name); // the player-link query, "" when none, null while not known
  const [play, setPlay] = useState(null); // {from: ms, seconds, chosen: by the user}
  const [position, setPosition] = useState(null);
  const [busy, setBusy] = useState(false);
  const snap = state.value;
  const server = snap && snap.server;
  const live = snap && snap.paths.find((p) => p.name === name);
  const liveRec = live && live.recording;
  const changed = liveRec ? `${liveRec.state} ${liveRec.segments_completed}` : "";

  const load = () =>
    api.getRecording(name).then(
      (r) => {
        setRec(r);
        setNotFound(false);
      },
      (e) => (e.status === 404 ? setNotFound(true) : setError(e.message)),
    );
  useEffect(() => {
    load();
  }, [name, changed]);

  const list = rec ? spans(rec.segments) : [];
  const last = list.length ? list[list.length - 1].end : 0;
  const startPlay = (from, seconds, chosen = true) => {
    setPlay({ from, seconds: seconds || Math.min(Math.max((last - from) / 1000, 1), MAX_PLAY_S), chosen });
    setPosition(from);
  };
  useEffect(() => {
    if (!play && list.length) startPlay(defaultStart(list), 0, false);
  }, [rec]);
  const remove = async (seg) => {
    if (!confirm(`Delete the segment of ${fmt.dateTime(seg.start)} (${fmt.bytes(seg.bytes)})?`)) return;
    setBusy(true);
    setError("");
    try {
      await api.deleteSegment(name, seg.start);
      await load();
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  const src = (play && server && query !== null && playbackUrl(server, name, new Date(play.from).toISOString(), play.seconds, { query })) || null;
  // The <video>'s src is set here rather than rendered, to keep the position (and pause) when
  // only the link changed.
  const [video, setVideo] = useState(null);
  const shown = useRef({ video: null, play: null });
  useEffect(() => {
    if (!video) return;
    const same = shown.current.video === video && shown.current.play === play;
    shown.current = { video, play };
    if (!src) {
      if (video.hasAttribute("src")) {
        video.removeAttribute("src");
        video.load();
      }
      return;
    }
    if (video.getAttribute("src") === src) return;
    const time = video.currentTime;
    const paused = video.paused;
    video.src = src;
    if (same && time > 0) {
      video.addEventListener(
        "loadedmetadata",
        () => {
          video.currentTime = time;
          if (paused) video.pause();
          else video.play().catch(() => {});
        },
        { once: true },
      );
    }
  }, [video, src]);

  return html`<section>
    <div class="page-head">
      <p class="crumbs"><a href=${href("recordings")}>Recordings</a> /</p>
      <h1>${name}</h1>
      ${live && html`<a href=${href("paths", name)}>Live path</a>`}
      <button type="button" class="small" onClick=${load}>Refresh</button>
    </div>
    <${Alert} error=${error} />
    ${notFound && html`<${Empty}><p>Nothing is recorded for <strong>${name}</strong>.</p><//>`}
    ${rec &&
    html`
      ${list.length > 0 &&
      html`<section class="card" aria-labelledby="tl-h">
        <h2 id="tl-h">Timeline</h2>
        <p class="muted small-text">Click a point of the timeline to play from that moment; gaps are times with nothing recorded.</p>
        <${Timeline} list=${list} playing=${!!play} position=${position} onPlay=${(t) => startPlay(t)} />
        ${server && !server.listeners.playback
          ? html`<p class="alert" role="alert">The playback server is off (<code>[playback]</code>): recordings cannot be played here.</p>`
          : html`<figure class="player">
              <video ref=${setVideo} data-testid="recording-player" controls playsinline autoplay=${!!(play && play.chosen)}
                aria-label=${`Recording of ${name}`}
                onTimeUpdate=${(e) => play && setPosition(wallClock(list, play.from, e.currentTarget.currentTime))}></video>
              <figcaption aria-live="polite">
                ${play ? `From ${fmt.dateTime(new Date(play.from).toISOString())}, ${fmt.duration(play.seconds)}. ` : ""}Choose a moment on the timeline or a range below.
              </figcaption>
            </figure>
            <h3>Range</h3>
            <${RangeForm} server=${server} name=${name} first=${list[0].start} query=${query || ""} onPlay=${startPlay} />`}
      </section>`}
      <section class="card" aria-labelledby="rec-h">
        <h2 id="rec-h">Recorder</h2>
        ${rec.recorder
          ? html`<${Facts} items=${[
              ["State", html`<${Badge} state=${rec.recorder.state} />`],
              ["File", rec.recorder.file],
              ["Written", fmt.bytes(rec.recorder.bytes_written)],
              ["Segments completed", rec.recorder.segments_completed],
              ["Dropped fragments", rec.recorder.dropped_fragments],
              ["Last error", rec.recorder.last_error ? `${rec.recorder.last_error} (${fmt.dateTime(rec.recorder.last_error_at)})` : null],
            ]} />`
          : html`<p class="muted">No recorder runs for this path now.</p>`}
        <p class="muted small-text">${rec.segments.length} segments, ${fmt.bytes(rec.bytes)}.</p>
      </section>
      <section class="card" aria-labelledby="seg-h">
        <h2 id="seg-h">Segments</h2>
        <${TableWrap} label="Segments">
          <table class="stack">
            <thead>
              <tr><th scope="col">Start</th><th scope="col" class="num">Duration</th><th scope="col" class="num">Size</th>
                <th scope="col">Format</th><th scope="col">Status</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr>
            </thead>
            <tbody>
              ${[...list].reverse().map(
                ({ seg }) => html`<tr key=${seg.start} data-testid="segment-row" data-start=${seg.start}>
                  <td data-label="Start">${fmt.dateTime(seg.start)}</td>
                  <td data-label="Duration" class="num">${fmt.duration(seg.duration)}</td>
                  <td data-label="Size" class="num">${fmt.bytes(seg.bytes)}</td>
                  <td data-label="Format">${seg.format}</td>
                  <td data-label="Status"><${Badge} state=${seg.writing ? "writing" : seg.complete ? "complete" : "incomplete"} /></td>
                  <td class="actions">
                    <button type="button" class="small" onClick=${() => startPlay(Date.parse(seg.start))}
                      aria-label=${`Play segment ${fmt.dateTime(seg.start)}`}>Play</button>
                    <button type="button" class="small danger" disabled=${seg.writing || busy}
                      title=${seg.writing ? "Being written" : undefined} aria-label=${`Delete segment ${fmt.dateTime(seg.start)}`}
                      onClick=${() => remove(seg)}>Delete</button>
                  </td>
                </tr>`,
              )}
            </tbody>
          </table>
        <//>
      </section>`}
  </section>`;
}
