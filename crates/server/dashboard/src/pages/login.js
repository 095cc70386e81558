// The sign-in page, shown alone (no navigation, no data) while /v1/me answers 401.
import { html } from "htm/preact";
import { useState } from "preact/hooks";
import { signIn } from "../auth.js";

export function Login() {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    setBusy(true);
    setError("");
    try {
      await signIn(form.user.value, form.pass.value);
    } catch (err) {
      setError(err.status === 429 ? `Too many failed attempts: ${err.message}` : err.message);
      setBusy(false);
    }
  };
  return html`<main class="login">
    <form data-testid="login" onSubmit=${submit} aria-labelledby="login-title">
      <h1 id="login-title">Sluice</h1>
      <p class="muted">Sign in to the dashboard.</p>
      <label for="login-user">User</label>
      <input id="login-user" name="user" autocomplete="username" required autocapitalize="none" spellcheck="false" />
      <label for="login-pass">Password</label>
      <input id="login-pass" name="pass" type="password" autocomplete="current-password" required />
      <p class="alert" role="alert" data-testid="login-error" hidden=${!error}>${error}</p>
      <button type="submit" class="primary" disabled=${busy}>${busy ? "Signing in…" : "Sign in"}</button>
    </form>
  </main>`;
}
