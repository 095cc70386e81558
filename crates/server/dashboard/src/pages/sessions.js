// The Sessions page (#/sessions): every session from the state stream, filtered by text
// (path, remote), protocol and role, each with a Kick button.
import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { state } from "../stream.js";
import { href } from "../router.js";
import * as fmt from "../format.js";
import { Badge, Empty } from "../components/ui.js";
import { KickButton } from "../components/kick.js";

const ROLES = ["publisher", "reader", "output", "transform"];
const PROTOCOLS = ["rtmp", "srt", "webrtc", "http-flv", "hls", "health", "record", "push", "transform"];

export function SessionsPage() {
  const [text, setText] = useState("");
  const [protocol, setProtocol] = useState("");
  const [role, setRole] = useState("");
  const snap = state.value;
  if (!snap) return html`<h1>Sessions</h1><p class="muted" aria-busy="true">Waiting for the server…</p>`;
  const now = Date.parse(snap.time) || Date.now();
  const protocols = [...new Set([...PROTOCOLS, ...snap.sessions.map((s) => s.protocol)])];
  const needle = text.trim().toLowerCase();
  const rows = snap.sessions.filter(
    (s) =>
      (!protocol || s.protocol === protocol) &&
      (!role || s.role === role) &&
      (!needle || `${s.path || ""} ${s.remote || ""}`.toLowerCase().includes(needle)),
  );
  const total = snap.sessions_total ?? snap.sessions.length;
  return html`<section>
    <div class="page-head">
      <h1>Sessions</h1>
      <p class="muted">
        ${rows.length} shown of ${total}${total > snap.sessions.length ? ` (the first ${snap.sessions.length} are listed)` : ""}
      </p>
    </div>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <div>
        <label for="filter-text">Path or remote</label>
        <input id="filter-text" type="search" data-testid="filter-text" value=${text}
          onInput=${(e) => setText(e.currentTarget.value)} placeholder="live/cam1, 10.0.0.7" />
      </div>
      <div>
        <label for="filter-protocol">Protocol</label>
        <select id="filter-protocol" data-testid="filter-protocol" value=${protocol}
          onChange=${(e) => setProtocol(e.currentTarget.value)}>
          <option value="">All</option>
          ${protocols.map((p) => html`<option value=${p}>${p}</option>`)}
        </select>
      </div>
      <div>
        <label for="filter-role">Role</label>
        <select id="filter-role" data-testid="filter-role" value=${role} onChange=${(e) => setRole(e.currentTarget.value)}>
          <option value="">All</option>
          ${ROLES.map((r) => html`<option value=${r}>${r}</option>`)}
        </select>
      </div>
    </form>
    ${rows.length === 0
      ? html`<${Empty}><p>No sessions${needle || protocol || role ? " match these filters" : ""}.</p><//>`
      : html`<table class="stack sessions">
          <thead>
            <tr>
              <th scope="col">Id</th><th scope="col">Protocol</th><th scope="col">Role</th><th scope="col">State</th>
              <th scope="col">Path</th><th scope="col">Remote</th><th scope="col">Started</th>
              <th scope="col" class="num">In</th><th scope="col" class="num">Out</th>
              <th scope="col" class="num">Dropped</th><th scope="col"><span class="visually-hidden">Actions</span></th>
            </tr>
          </thead>
          <tbody>
            ${rows.map(
              (s) => html`<tr key=${s.id} data-testid="session-row" data-session=${s.id} data-protocol=${s.protocol} data-role=${s.role}>
                <td data-label="Id">${s.id}</td>
                <td data-label="Protocol">${s.protocol}</td>
                <td data-label="Role">${s.role}</td>
                <td data-label="State"><${Badge} state=${s.state} /></td>
                <td data-label="Path">${s.path ? html`<a href=${href("paths", s.path)}>${s.path}</a>` : "—"}</td>
                <td data-label="Remote">${s.remote || "—"}</td>
                <td data-label="Started"><span title=${fmt.dateTime(s.started_at)}>${fmt.clock(s.started_at)}</span>
                  <span class="muted"> · ${fmt.duration(fmt.since(s.started_at, now))}</span></td>
                <td data-label="In" class="num">${fmt.bitrate(s.bitrate_in)}</td>
                <td data-label="Out" class="num">${fmt.bitrate(s.bitrate_out)}</td>
                <td data-label="Dropped" class="num">${fmt.number(s.frames_dropped)}</td>
                <td><${KickButton} session=${s} /></td>
              </tr>`,
            )}
          </tbody>
        </table>`}
  </section>`;
}
