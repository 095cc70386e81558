// The player link of a path (POST /v1/player-links): the query that lets the dashboard's player,
// snapshot and recording playback read the path. A link lasts an hour (`expires`, Unix seconds):
// the hook asks for a new one RENEW_BEFORE_MS before that, so the pages keep working past it.
import { useEffect, useState } from "preact/hooks";
import * as api from "./api.js";

const RENEW_BEFORE_MS = 5 * 60 * 1000;
/** Bounds of the wait before a renewal, whatever the clocks say (the browser's may be off). */
const MIN_WAIT_MS = 30 * 1000;
const MAX_WAIT_MS = 55 * 60 * 1000;
/** The wait before another try when a renewal fails (the current link still works a while). */
const RETRY_MS = 30 * 1000;

/**
 * [query, error] for the path: query is null while not known, "" when the server needs none or
 * has no such endpoint, and changes to a new link before the current one expires.
 */
export function usePlayerQuery(name) {
  const [q, setQ] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    let have = false; // a link was given: a failed renewal keeps it and tries again
    let timer = null;
    let due = Infinity; // Date.now() at which to renew
    const schedule = (ms) => {
      clearTimeout(timer);
      const wait = Math.min(Math.max(ms, MIN_WAIT_MS), MAX_WAIT_MS);
      due = Date.now() + wait;
      timer = setTimeout(get, wait);
    };
    const get = () => {
      clearTimeout(timer);
      due = Infinity;
      api.playerLink(name).then(
        (r) => {
          if (!live) return;
          const query = (r && r.query) || "";
          setQ(query);
          setError("");
          have = !!query;
          if (query && r.expires) schedule(r.expires * 1000 - Date.now() - RENEW_BEFORE_MS);
        },
        (e) => {
          if (!live) return;
          if (have) {
            setError(`Player link: ${e.message}`);
            schedule(RETRY_MS);
            return;
          }
          if (e.status !== 404) setError(`Player link: ${e.message}`);
          setQ("");
        },
      );
    };
    // Timers may fire late after the computer slept or the tab was in the background.
    const wake = () => {
      if (document.visibilityState === "visible" && Date.now() >= due) get();
    };
    get();
    document.addEventListener("visibilitychange", wake);
    return () => {
      live = false;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", wake);
    };
  }, [name]);
  return [q, error];
}
