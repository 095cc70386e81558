// The Recordings page (#/recordings): every recorded path from GET /v1/recordings.
import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import { listRecordings } from "../api.js";
import { href } from "../router.js";
import * as fmt from "../format.js";
import { Alert, Empty, TableWrap } from "../components/ui.js";

export function RecordingsPage() {
  const [list, setList] = useState(null);
  const [error, setError] = useState("");
  const load = () => {
    setError("");
    listRecordings().then((r) => setList(r.items), (e) => setError(e.message));
  };
  useEffect(load, []);
  return html`<section>
    <div class="page-head">
      <h1>Recordings</h1>
      <button type="button" class="small" onClick=${load}>Refresh</button>
    </div>
    <${Alert} error=${error} />
    ${list === null
      ? !error && html`<p class="muted" aria-busy="true">Loading…</p>`
      : list.length === 0
        ? html`<${Empty}>
            <p><strong>Nothing is recorded.</strong> Turn recording on for a path with
              <code>[path_defaults.record] enabled = true</code> or <code>[paths."NAME".record]</code> in the configuration.</p>
          <//>`
        : html`<${TableWrap} label="Recorded paths">
            <table class="stack">
              <thead>
                <tr><th scope="col">Path</th><th scope="col" class="num">Segments</th><th scope="col" class="num">Size</th>
                  <th scope="col">First</th><th scope="col">Last</th><th scope="col" class="num">Span</th></tr>
              </thead>
              <tbody>
                ${list.map(
                  (r) => html`<tr key=${r.path} data-testid="recording-row" data-path=${r.path}>
                    <td data-label="Path"><a href=${href("recordings", r.path)}>${r.path}</a></td>
                    <td data-label="Segments" class="num">${r.segments}</td>
                    <td data-label="Size" class="num">${fmt.bytes(r.bytes)}</td>
                    <td data-label="First">${fmt.dateTime(r.first)}</td>
                    <td data-label="Last">${fmt.dateTime(r.last)}</td>
                    <td data-label="Span" class="num">${fmt.duration((Date.parse(r.last) - Date.parse(r.first)) / 1000)}</td>
                  </tr>`,
                )}
              </tbody>
            </table>
          <//>`}
  </section>`;
}
