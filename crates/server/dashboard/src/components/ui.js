// Small shared pieces: status badges, error alerts, copyable URLs, empty states, key/value lists.
import { html } from "htm/preact";
import { useState } from "preact/hooks";

const KIND = {
  ok: ["online", "flowing", "live", "recording", "running", "connected", "present", "sound", "steady", "complete"],
  warn: ["connecting", "retrying", "waiting", "starting", "restarting", "grace", "writing", "closing"],
  bad: ["refused", "error", "stalled", "silent", "absent", "jumping", "offline", "failed"],
};

export function stateKind(state) {
  for (const [kind, states] of Object.entries(KIND)) if (states.includes(state)) return kind;
  return "neutral";
}

/** A state word in a coloured badge; `text` overrides the visible text. */
export function Badge({ state, text, testid }) {
  return html`<span class=${`badge ${stateKind(state)}`} data-testid=${testid}>${text ?? state ?? "—"}</span>`;
}

/** An API error for the user (role="alert"); nothing when `error` is empty. */
export function Alert({ error, testid }) {
  if (!error) return null;
  return html`<p class="alert" role="alert" data-testid=${testid}>${error}</p>`;
}

/** A labelled read-only URL with a copy button. */
export function CopyField({ label, value }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(value);
    } catch {
      const ta = document.createElement("textarea");
      ta.value = value;
      document.body.append(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    setCopied(true);
    setTimeout(() => setCopied(false), 1500);
  };
  return html`<div class="copy">
    <span class="copy-label">${label}</span>
    <code class="copy-value">${value}</code>
    <button type="button" class="small" onClick=${copy} aria-label=${`Copy ${label}`}>
      ${copied ? "Copied" : "Copy"}
    </button>
  </div>`;
}

/** Key/value pairs as a definition list; rows whose value is undefined are left out. */
export function Facts({ items }) {
  return html`<dl class="facts">
    ${items
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => html`<div><dt>${k}</dt><dd>${v === null || v === "" ? "—" : v}</dd></div>`)}
  </dl>`;
}

export function Empty({ children }) {
  return html`<div class="empty">${children}</div>`;
}

/** A scrollable table container that keyboard users can scroll too. */
export function TableWrap({ label, children }) {
  return html`<div class="table-wrap" role="region" aria-label=${`${label} (table)`} tabindex="0">${children}</div>`;
}
