// Who is signed in: `me` is the answer of GET /v1/me (undefined while loading, null when the
// browser must sign in), with sign-in and sign-out. A 401 from any API call signs out.
import { signal } from "@preact/signals";
import * as api from "./api.js";

export const me = signal(undefined);
/** Why /v1/me could not be read (not a 401): shown with a retry button. */
export const meError = signal(null);

function set(value) {
  api.setCsrf(value ? value.csrf : null);
  me.value = value;
}

api.setUnauthorizedHandler(() => set(null));

export async function loadMe() {
  meError.value = null;
  try {
    set(await api.getMe());
  } catch (e) {
    if (e.status === 401) set(null);
    // A server without sign-in support: the API is open to this client.
    else if (e.status === 404) set({ user: null, method: "open", csrf: null, logout: false });
    else meError.value = e.message;
  }
}

export async function signIn(user, pass) {
  const answer = await api.login(user, pass);
  api.setCsrf(answer.csrf);
  try {
    set(await api.getMe());
  } catch {
    set({ user: answer.user, method: "cookie", csrf: answer.csrf, logout: true });
  }
}

export async function signOut() {
  try {
    await api.logout();
  } finally {
    set(null);
  }
}

/** Whether the signed-in user can sign out (a cookie session). */
export const canSignOut = (m) => !!m && (m.method === "cookie" || m.logout === true);
