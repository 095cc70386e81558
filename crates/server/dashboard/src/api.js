// Every HTTP call of the dashboard: the Sluice API (/v1/..., same origin) and the two calls it
// makes to other listeners (WHEP offer and teardown). ENDPOINTS lists each method + path template
// of the API that the dashboard uses, spelled as in /v1/openapi.json (a Rust test checks it).

export const ENDPOINTS = [
  ["GET", "/v1/me"],
  ["POST", "/v1/login"],
  ["POST", "/v1/logout"],
  ["GET", "/v1/server"],
  ["GET", "/v1/state/stream"],
  ["GET", "/v1/events"],
  ["GET", "/v1/events/recent"],
  ["GET", "/v1/paths"],
  ["GET", "/v1/sessions"],
  ["DELETE", "/v1/sessions/{id}"],
  ["GET", "/v1/paths/{name}/pushes"],
  ["POST", "/v1/paths/{name}/pushes"],
  ["DELETE", "/v1/paths/{name}/pushes/{id}"],
  ["POST", "/v1/paths/{name}/pushes/{id}/restart"],
  ["POST", "/v1/player-links"],
  ["GET", "/v1/recordings"],
  ["GET", "/v1/recordings/{path}"],
  ["DELETE", "/v1/recordings/{path}"],
  ["GET", "/v1/config"],
  ["PATCH", "/v1/config"],
  ["GET", "/v1/config/paths/{name}"],
  ["PUT", "/v1/config/paths/{name}"],
  ["DELETE", "/v1/config/paths/{name}"],
  ["POST", "/v1/config/reload"],
];

/** An error answer of the API: `status` and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let csrf = null;
let onUnauthorized = () => {};

/** The CSRF token sent with every non-GET request (from /v1/me or /v1/login; null: none). */
export function setCsrf(token) {
  csrf = token || null;
}

/** Called when a request other than the login answers 401: the session is gone. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/** A path name as a URL path: each segment encoded, the slashes kept. */
export function encodePath(name) {
  return name.split("/").map(encodeURIComponent).join("/");
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function request(method, url, body, { auth = true } = {}) {
  const headers = { "X-Requested-With": "sluice-dashboard", Accept: "application/json" };
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "The server cannot be reached.");
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    if (res.status === 401 && auth) onUnauthorized();
    const message = (data && data.error) || `${res.status} ${res.statusText || "error"}`;
    throw new ApiError(res.status, message);
  }
  return data;
}

// Sign-in
export const getMe = () => request("GET", "/v1/me", undefined, { auth: false });
export const login = (user, pass) => request("POST", "/v1/login", { user, pass }, { auth: false });
// Like every non-GET request, the sign-out sends the X-CSRF-Token header (the server needs it).
export const logout = () => request("POST", "/v1/logout");

// Live state (the polling fallback of the state stream) and events
export const STATE_STREAM_URL = "/v1/state/stream";
export const EVENTS_URL = "/v1/events";
export const getServer = () => request("GET", "/v1/server");
export const getPaths = () => request("GET", "/v1/paths?limit=1000");
export const getSessions = () => request("GET", "/v1/sessions?limit=1000");
export const getRecentEvents = () => request("GET", "/v1/events/recent");

// Sessions
export const kickSession = (id) => request("DELETE", `/v1/sessions/${encodeURIComponent(id)}`);

// Push destinations
const pushes = (name) => `/v1/paths/${encodePath(name)}/pushes`;
export const listPushes = (name) => request("GET", pushes(name));
export const addPush = (name, url) => request("POST", pushes(name), { url });
export const removePush = (name, id) => request("DELETE", `${pushes(name)}/${encodeURIComponent(id)}`);
export const restartPush = (name, id) => request("POST", `${pushes(name)}/${encodeURIComponent(id)}/restart`);

// A short-lived read credential for the embedded player and the snapshot
export const playerLink = (path) => request("POST", "/v1/player-links", { path });

// Recordings
export const listRecordings = () => request("GET", "/v1/recordings");
export const getRecording = (path) => request("GET", `/v1/recordings/${encodePath(path)}`);
export const deleteSegment = (path, start) =>
  request("DELETE", `/v1/recordings/${encodePath(path)}${query({ segment: start })}`);

// Configuration
const table = (name) => `/v1/config/paths/${encodePath(name)}`;
export const getConfig = () => request("GET", "/v1/config");
export const patchConfig = (patch) => request("PATCH", "/v1/config", patch);
export const getPathTable = (name) => request("GET", table(name));
export const putPathTable = (name, body) => request("PUT", table(name), body);
export const deletePathTable = (name) => request("DELETE", table(name));
export const reloadConfig = () => request("POST", "/v1/config/reload");

// WebRTC playback on the WebRTC listener (another origin: plain CORS request, no API headers)
export async function whepOffer(url, sdp) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: sdp });
  const text = await res.text();
  if (res.status !== 201 && res.status !== 200) {
    let message = `${res.status}`;
    try {
      message = JSON.parse(text).error || message;
    } catch {
      /* not JSON: keep the status */
    }
    throw new ApiError(res.status, message);
  }
  const location = res.headers.get("Location");
  return { sdp: text, location: location ? new URL(location, url).href : null };
}

export function whepClose(resourceUrl) {
  fetch(resourceUrl, { method: "DELETE" }).catch(() => {});
}
