// The Server page (#/server): version, build, uptime, process CPU and memory with their history,
// listeners, counts, and the server's events (the recent ones, then live from /v1/events), newest
// first, with refusals (access_denied) highlighted and a "refusals only" filter.
import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import * as api from "../api.js";
import { state, history } from "../stream.js";
import { href } from "../router.js";
import * as fmt from "../format.js";
import { Chart } from "../components/chart.js";
import { Alert, Facts, TableWrap } from "../components/ui.js";

const MAX_EVENTS = 500;
const CPU = [{ label: "CPU", color: "--chart-1", fill: true }];
const MEM = [{ label: "Memory", color: "--chart-2", fill: true }];
const percent = (v) => `${fmt.number(v, 1)} %`;
const SKIP = new Set(["type", "time", "path"]);

function details(e) {
  if (e.type === "access_denied") {
    return `${e.action || "access"} refused${e.protocol ? ` (${e.protocol}${e.remote ? ` from ${e.remote}` : ""})` : ""}: ${e.reason || ""}`;
  }
  return Object.entries(e)
    .filter(([k, v]) => !SKIP.has(k) && v !== null && v !== "" && v !== undefined)
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" · ");
}

/** The recent events and the live ones, newest first; `error` when the stream cannot be read. */
function useEvents() {
  const [events, setEvents] = useState([]);
  const [error, setError] = useState("");
  useEffect(() => {
    // The recent events and the first live ones may overlap: `early` holds the keys of the live
    // events received before the recent ones (dropped then), `recent` those of the recent events
    // (a live event among them came already; at most the server's few hundred recent events).
    const key = (e) => JSON.stringify(e);
    let early = new Set();
    const recent = new Set();
    const show = (list, older) =>
      list.length && setEvents((old) => (older ? [...old, ...list.reverse()] : [...list.reverse(), ...old]).slice(0, MAX_EVENTS));
    const es = new EventSource(api.EVENTS_URL);
    es.onmessage = (m) => {
      let e;
      try {
        e = JSON.parse(m.data);
      } catch {
        return; /* not an event */
      }
      setError("");
      const k = key(e);
      if (early) early.add(k);
      else if (recent.delete(k)) return;
      show([e], false);
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) setError("The live event stream is not available.");
    };
    api.getRecentEvents().then(
      (r) => {
        const fresh = (r.items || []).filter((e) => {
          const k = key(e);
          if (early && early.has(k)) return false;
          recent.add(k);
          return true;
        });
        early = null;
        show(fresh, true); // older than the live events shown
      },
      (e) => {
        early = null;
        if (e.status !== 404) setError(e.message);
      },
    );
    return () => es.close();
  }, []);
  return [events, error];
}

function Events() {
  const [events, error] = useEvents();
  const [refusals, setRefusals] = useState(false);
  const shown = refusals ? events.filter((e) => e.type === "access_denied") : events;
  return html`<section class="card" aria-labelledby="events-h">
    <div class="section-head">
      <h2 id="events-h">Events</h2>
      <label class="check"><input type="checkbox" data-testid="filter-refusals" checked=${refusals}
        onChange=${(e) => setRefusals(e.currentTarget.checked)} /> Refusals only</label>
    </div>
    <${Alert} error=${error} />
    ${shown.length === 0
      ? html`<p class="muted">${refusals ? "No refusals." : "No events yet."}</p>`
      : html`<${TableWrap} label="Events">
          <table class="events stack">
            <thead><tr><th scope="col">Time</th><th scope="col">Type</th><th scope="col">Path</th><th scope="col">Details</th></tr></thead>
            <tbody>
              ${shown.map(
                (e) => html`<tr data-testid="event-row" data-type=${e.type} class=${e.type === "access_denied" ? "refusal" : undefined}>
                  <td data-label="Time"><span title=${e.time}>${fmt.clock(e.time)}</span></td>
                  <td data-label="Type">${e.type === "access_denied" ? html`<span class="badge bad">refused</span>` : e.type}</td>
                  <td data-label="Path">${e.path ? html`<a href=${href("paths", e.path)}>${e.path}</a>` : "—"}</td>
                  <td data-label="Details" class="details">${details(e)}</td>
                </tr>`,
              )}
            </tbody>
          </table>
        <//>`}
  </section>`;
}

export function ServerPage() {
  const snap = state.value;
  const s = snap && snap.server;
  const proc = s && s.process;
  const h = history.server;
  return html`<section>
    <div class="page-head"><h1>Server</h1></div>
    ${!s
      ? html`<p class="muted" aria-busy="true">Waiting for the server…</p>`
      : html`<div class="grid-2">
            <section class="card" aria-labelledby="about-h">
              <h2 id="about-h">Sluice</h2>
              <${Facts} items=${[
                ["Version", html`<span data-testid="server-version">${s.version}</span>`],
                ["Build", s.build ? [s.build.target, s.build.profile, s.build.rust_version && `rust ${s.build.rust_version}`].filter(Boolean).join(", ") : null],
                ["Started", fmt.dateTime(s.started_at)],
                ["Uptime", fmt.duration(s.uptime_seconds)],
                ["Live paths", s.paths],
                ["Sessions", s.sessions],
                ["Threads", proc ? proc.threads : undefined],
                ["Open files", proc ? proc.open_fds : undefined],
              ]} />
            </section>
            <section class="card" aria-labelledby="listeners-h">
              <h2 id="listeners-h">Listeners</h2>
              <table>
                <thead><tr><th scope="col">Listener</th><th scope="col">Address</th></tr></thead>
                <tbody>
                  ${Object.entries(s.listeners || {}).map(([k, v]) => html`<tr><td>${k}</td><td><code>${v}</code></td></tr>`)}
                </tbody>
              </table>
            </section>
          </div>
          <div class="grid-2">
            <section class="card" aria-labelledby="cpu-h">
              <h2 id="cpu-h">CPU</h2>
              <p class="big" data-testid="server-cpu">${proc ? percent(proc.cpu_percent) : "—"}</p>
              ${proc
                ? html`<${Chart} label="Process CPU, last 5 minutes" series=${CPU} data=${[h.t, h.cpu]} version=${snap.time} fmt=${percent} height=${120} />`
                : html`<p class="muted small-text">Not reported by this server.</p>`}
            </section>
            <section class="card" aria-labelledby="mem-h">
              <h2 id="mem-h">Memory</h2>
              <p class="big" data-testid="server-memory">${proc ? fmt.bytes(proc.memory_bytes) : "—"}</p>
              ${proc
                ? html`<${Chart} label="Process memory, last 5 minutes" series=${MEM} data=${[h.t, h.mem]} version=${snap.time} fmt=${fmt.bytes} height=${120} />`
                : html`<p class="muted small-text">Not reported by this server.</p>`}
            </section>
          </div>`}
    <${Events} />
  </section>`;
}
