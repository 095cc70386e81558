// The hash router: `route` is the current page and its parameter, from location.hash
// (#/, #/paths/NAME, #/sessions, #/recordings, #/recordings/NAME, #/config, #/config/NAME, #/server);
// an unknown page or a malformed one is "notfound".
import { signal } from "@preact/signals";

function parse(hash) {
  const raw = hash.replace(/^#\/?/, "");
  const [first, ...rest] = raw.split("/");
  let arg = "";
  try {
    arg = rest.map(decodeURIComponent).join("/");
  } catch {
    return { page: "notfound" }; // a malformed escape (#/paths/%E0%A4%A)
  }
  switch (first) {
    case "":
      return { page: "paths" };
    case "paths":
      return arg ? { page: "path", name: arg } : { page: "paths" };
    case "sessions":
      return { page: "sessions" };
    case "recordings":
      return arg ? { page: "recording", name: arg } : { page: "recordings" };
    case "config":
      return { page: "config", name: arg };
    case "server":
      return { page: "server" };
    default:
      return { page: "notfound" };
  }
}

export const route = signal(parse(location.hash));

addEventListener("hashchange", () => {
  route.value = parse(location.hash);
});

/** The href of a page: href("paths", "live/cam1") is "#/paths/live/cam1". */
export function href(page, name) {
  const base = `#/${page}`;
  return name ? `${base}/${name.split("/").map(encodeURIComponent).join("/")}` : base;
}
