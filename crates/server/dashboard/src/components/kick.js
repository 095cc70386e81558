// The Kick button of a session: asks for confirmation, ends the session through the API
// (DELETE /v1/sessions/{id}); the row goes away when the state stream no longer lists it.
import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { kickSession } from "../api.js";

export function KickButton({ session, label = "Kick" }) {
  const [state, setState] = useState("");
  const [error, setError] = useState("");
  const kick = async () => {
    const who = `${session.protocol} ${session.role} ${session.id}${session.remote ? ` (${session.remote})` : ""}`;
    if (!confirm(`End session ${who}?`)) return;
    setState("busy");
    setError("");
    try {
      await kickSession(session.id);
      setState("done");
    } catch (e) {
      setError(e.message);
      setState("");
    }
  };
  return html`<span class="kick">
    <button type="button" class="small danger" data-testid="kick" disabled=${state !== ""} onClick=${kick}
      aria-label=${`${label} session ${session.id}`}>${state === "busy" ? "Ending…" : state === "done" ? "Ended" : label}</button>
    ${error && html`<span class="alert inline" role="alert">${error}</span>`}
  </span>`;
}
