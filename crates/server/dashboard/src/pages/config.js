// The Config page (#/config, #/config/NAME): path tables (edit as JSON, add, delete), the global
// settings with where each value comes from (and a JSON merge patch for them), reload from files.
import { html } from "htm/preact";
import { useEffect, useState } from "preact/hooks";
import * as api from "../api.js";
import { href } from "../router.js";
import { Alert, Empty } from "../components/ui.js";

function parseJson(text) {
  try {
    const v = JSON.parse(text);
    if (v === null || typeof v !== "object" || Array.isArray(v)) return [null, "The JSON must be an object ({...})."];
    return [v, ""];
  } catch (e) {
    return [null, `Not valid JSON: ${e.message}`];
  }
}

/** What a change did: changed keys, ended sessions, restart needed. */
function ChangeResult({ result, testid = "config-result", verb = "Saved." }) {
  if (!result) return null;
  const { changed = [], ended_sessions: ended = [], restart_needed: restart = [] } = result;
  return html`<div class="result" data-testid=${testid} role="status">
    <p><strong>${verb}</strong> ${changed.length ? `Changed: ${changed.join(", ")}` : "Nothing changed."}</p>
    ${ended.length > 0 &&
    html`<p>Sessions ended:</p>
      <ul>${ended.map((s) => html`<li>${s.id} on ${s.path}: ${s.reason}</li>`)}</ul>`}
    ${restart.length > 0 && html`<p class="warn-text">Needs a restart to take effect: ${restart.join(", ")}</p>`}
  </div>`;
}

/** Runs an API change with busy/error/result state. */
function useChange() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [result, setResult] = useState(null);
  const run = async (fn) => {
    setBusy(true);
    setError("");
    setResult(null);
    try {
      setResult((await fn()) || {});
      return true;
    } catch (e) {
      setError(e.message);
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, result, run };
}

function PathTable({ name, onChanged }) {
  const [table, setTable] = useState(null);
  const [text, setText] = useState("");
  const [loadError, setLoadError] = useState("");
  const change = useChange();
  const load = () =>
    api.getPathTable(name).then(
      (t) => {
        setTable(t);
        setText(JSON.stringify(t.table, null, 2));
      },
      (e) => setLoadError(e.message),
    );
  useEffect(() => {
    load();
  }, [name]);
  const save = async (e) => {
    e.preventDefault();
    const [body, err] = parseJson(text);
    if (err) return change.setError(err);
    if (await change.run(() => api.putPathTable(name, body))) {
      load();
      onChanged();
    }
  };
  const remove = async () => {
    if (!confirm(`Delete the path table "${name}"? Its sessions end.`)) return;
    if (await change.run(() => api.deletePathTable(name))) {
      onChanged();
      location.hash = href("config");
    }
  };
  if (loadError) return html`<${Alert} error=${loadError} />`;
  if (!table) return html`<p class="muted" aria-busy="true">Loading…</p>`;
  return html`<div class="table-editor">
    <h2>Path table <code>${name}</code></h2>
    <p class="muted small-text">From ${table.origin === "state" ? "the API (state file)" : "the configuration file"}.</p>
    <form onSubmit=${save}>
      <label for="path-table-json">Path settings (JSON)</label>
      <textarea id="path-table-json" data-testid="path-table-json" rows="14" spellcheck="false" value=${text}
        onInput=${(e) => setText(e.currentTarget.value)}></textarea>
      <div class="form-actions">
        <button type="submit" class="primary" data-testid="save-path" disabled=${change.busy}>Save</button>
        <button type="button" class="danger" data-testid="delete-path" disabled=${change.busy} onClick=${remove}>Delete table</button>
      </div>
    </form>
    <${Alert} error=${change.error} testid="config-error" />
    <${ChangeResult} result=${change.result} />
    <details>
      <summary>Resolved settings (over path_defaults, read-only)</summary>
      <pre class="json">${JSON.stringify(table.resolved, null, 2)}</pre>
    </details>
  </div>`;
}

function AddTable({ onChanged }) {
  const [name, setName] = useState("");
  const [text, setText] = useState("{}");
  const change = useChange();
  const add = async (e) => {
    e.preventDefault();
    const [body, err] = parseJson(text);
    if (err) return change.setError(err);
    if (await change.run(() => api.putPathTable(name.trim(), body))) {
      onChanged();
      location.hash = href("config", name.trim());
    }
  };
  return html`<details class="card">
    <summary>Add path table</summary>
    <form onSubmit=${add}>
      <label for="new-table-name">Name (a path or a pattern with *)</label>
      <input id="new-table-name" required value=${name} onInput=${(e) => setName(e.currentTarget.value)}
        placeholder="live/cam2" spellcheck="false" autocomplete="off" />
      <label for="new-table-json">Settings (JSON)</label>
      <textarea id="new-table-json" rows="5" spellcheck="false" value=${text} onInput=${(e) => setText(e.currentTarget.value)}></textarea>
      <div class="form-actions"><button type="submit" disabled=${change.busy}>Add table</button></div>
    </form>
    <${Alert} error=${change.error} testid="config-error" />
  </details>`;
}

/** [key, value] leaves of a configuration object, with dotted keys as in `sources`. */
function leaves(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) out.push(...leaves(v, key));
    else out.push([key, v]);
  }
  return out;
}

function GlobalSettings({ config, onChanged }) {
  const [text, setText] = useState('{\n  "rtmp": {"chunk_size": 4096}\n}');
  const change = useChange();
  const sections = Object.entries(config.config).filter(([k]) => k !== "paths");
  const patch = async (e) => {
    e.preventDefault();
    const [body, err] = parseJson(text);
    if (err) return change.setError(err);
    if (await change.run(() => api.patchConfig(body))) onChanged();
  };
  return html`<section class="card" aria-labelledby="global-h">
    <h2 id="global-h">Global settings</h2>
    <p class="muted small-text">Merged from the built-in defaults, the configuration file${config.files && config.files.config ? html` (<code>${config.files.config}</code>)` : ""},
      the state file${config.files && config.files.state ? html` (<code>${config.files.state}</code>)` : " (none: API changes are kept in memory only)"} and the environment.</p>
    ${sections.map(
      ([section, value]) => html`<details class="section">
        <summary>${section}</summary>
        <table class="kv">
          <thead><tr><th scope="col">Key</th><th scope="col">Value</th><th scope="col">Source</th></tr></thead>
          <tbody>
            ${(value && typeof value === "object" ? leaves(value, section) : [[section, value]]).map(
              ([k, v]) => html`<tr>
                <td><code>${k}</code></td>
                <td><code class="wrap">${JSON.stringify(v)}</code></td>
                <td><span class="chip">${config.sources[k] || "default"}</span></td>
              </tr>`,
            )}
          </tbody>
        </table>
      </details>`,
    )}
    <form onSubmit=${patch} class="patch-form">
      <label for="config-patch">Change global settings (JSON merge patch; null takes a key back out of the state file)</label>
      <textarea id="config-patch" rows="5" spellcheck="false" value=${text} onInput=${(e) => setText(e.currentTarget.value)}></textarea>
      <div class="form-actions"><button type="submit" disabled=${change.busy}>Apply patch</button></div>
    </form>
    <${Alert} error=${change.error} testid="config-error" />
    <${ChangeResult} result=${change.result} testid="global-result" />
  </section>`;
}

export function ConfigPage({ selected }) {
  const [config, setConfig] = useState(null);
  const [error, setError] = useState("");
  const reload = useChange();
  const load = () => api.getConfig().then(setConfig, (e) => setError(e.message));
  useEffect(() => {
    load();
  }, []);
  const names = config ? Object.keys(config.config.paths || {}) : [];
  return html`<section>
    <div class="page-head">
      <h1>Configuration</h1>
      <button type="button" class="small" disabled=${reload.busy}
        onClick=${async () => (await reload.run(api.reloadConfig)) && load()}>Reload from files</button>
    </div>
    <${Alert} error=${error || reload.error} testid="config-error" />
    <${ChangeResult} result=${reload.result} testid="reload-result" verb="Reloaded." />
    ${config && config.restart_needed && config.restart_needed.length > 0 &&
    html`<p class="alert warn" role="status">Restart needed for: ${config.restart_needed.join(", ")}</p>`}
    ${config &&
    html`<div class="config-layout">
        <nav class="card table-list" aria-labelledby="tables-h">
          <h2 id="tables-h">Path tables</h2>
          ${names.length === 0
            ? html`<p class="muted">No path tables: every path is accepted with the defaults.</p>`
            : html`<ul>
                ${names.map(
                  (n) => html`<li><a href=${href("config", n)} data-testid="config-path" data-name=${n}
                    aria-current=${n === selected ? "true" : undefined}>${n}</a></li>`,
                )}
              </ul>`}
        </nav>
        <div class="card">
          ${selected
            ? html`<${PathTable} key=${selected} name=${selected} onChanged=${load} />`
            : html`<${Empty}><p>Choose a path table to see and edit its settings.</p><//>`}
        </div>
      </div>
      <${AddTable} onChanged=${load} />
      <${GlobalSettings} config=${config} onChanged=${load} />`}
  </section>`;
}
