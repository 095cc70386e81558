// The app shell: sign-in gate, top bar (navigation, connection indicator, sign-out) and the page
// of the current route. The live data runs only while signed in.
import { html } from "htm/preact";
import { useEffect, useRef } from "preact/hooks";
import { me, meError, loadMe, signOut, canSignOut } from "./auth.js";
import { route, href } from "./router.js";
import * as stream from "./stream.js";
import { Login } from "./pages/login.js";
import { PathsPage } from "./pages/paths.js";
import { PathPage } from "./pages/path.js";
import { SessionsPage } from "./pages/sessions.js";
import { RecordingsPage } from "./pages/recordings.js";
import { RecordingPage } from "./pages/recording.js";
import { ConfigPage } from "./pages/config.js";
import { ServerPage } from "./pages/server.js";

const NAV = [
  ["paths", "Paths", "#/", ["paths", "path"]],
  ["sessions", "Sessions", href("sessions"), ["sessions"]],
  ["recordings", "Recordings", href("recordings"), ["recordings", "recording"]],
  ["config", "Config", href("config"), ["config"]],
  ["server", "Server", href("server"), ["server"]],
];

function Conn() {
  const s = stream.conn.value;
  return html`<span class=${`conn ${s}`} data-testid="conn" data-state=${s} role="status">
    <span class="dot" aria-hidden="true"></span>${s === "live" ? "Live" : "Reconnecting…"}
  </span>`;
}

function TopBar() {
  const page = route.value.page;
  const m = me.value;
  return html`<header class="topbar">
    <a class="brand" href="#/">Sluice</a>
    <nav aria-label="Main">
      <ul>
        ${NAV.map(
          ([id, label, to, pages]) => html`<li>
            <a href=${to} data-testid=${`nav-${id}`} aria-current=${pages.includes(page) ? "page" : undefined}>${label}</a>
          </li>`,
        )}
      </ul>
    </nav>
    <div class="topbar-end">
      <${Conn} />
      ${m && m.user && html`<span class="user">${m.user}</span>`}
      ${canSignOut(m) && html`<button type="button" class="small" data-testid="logout" onClick=${signOut}>Sign out</button>`}
    </div>
  </header>`;
}

function Page() {
  const r = route.value;
  switch (r.page) {
    case "paths":
      return html`<${PathsPage} />`;
    case "path":
      return html`<${PathPage} key=${r.name} name=${r.name} />`;
    case "sessions":
      return html`<${SessionsPage} />`;
    case "recordings":
      return html`<${RecordingsPage} />`;
    case "recording":
      return html`<${RecordingPage} key=${r.name} name=${r.name} />`;
    case "config":
      return html`<${ConfigPage} selected=${r.name} />`;
    case "server":
      return html`<${ServerPage} />`;
    default:
      return html`<h1>Not found</h1><p>There is no such page. <a href="#/">Go to the paths</a>.</p>`;
  }
}

function Shell() {
  const main = useRef(null);
  const shown = useRef(null); // the route shown before (null: none yet, the first load)
  const r = route.value;
  useEffect(() => {
    stream.start();
    return stream.stop;
  }, []);
  // After navigating (not on the first load), put the keyboard focus on the new page's h1 (or
  // on <main>), since the link that was followed is often gone. Choosing another table of the
  // config page keeps the focus where it is when that element is still there.
  useEffect(() => {
    const before = shown.current;
    shown.current = r;
    if (!before || !main.current) return;
    const active = document.activeElement;
    const kept = active && active !== document.body && active.isConnected && main.current.contains(active);
    if (before.page === r.page && r.page === "config" && kept) return;
    const h1 = main.current.querySelector("h1");
    if (h1) {
      h1.setAttribute("tabindex", "-1");
      h1.focus();
    } else {
      main.current.focus();
    }
  }, [r.page, r.name]);
  return html`<a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      main.current.focus();
    }}>Skip to content</a>
    <${TopBar} />
    <main id="main" ref=${main} tabindex="-1"><${Page} /></main>`;
}

export function App() {
  useEffect(() => {
    loadMe();
  }, []);
  const m = me.value;
  if (meError.value) {
    return html`<main class="center">
      <h1>Sluice</h1>
      <p class="alert" role="alert">${meError.value}</p>
      <button type="button" onClick=${loadMe}>Try again</button>
    </main>`;
  }
  if (m === undefined) return html`<main class="center" aria-busy="true"><p>Loading…</p></main>`;
  if (m === null) return html`<${Login} />`;
  return html`<${Shell} />`;
}
