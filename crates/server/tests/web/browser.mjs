// Headless Chromium for the player scripts of the tests (playwright-core from ../browser): the
// flags every script needs (autoplay, no GPU, no background traffic), plus CHROMIUM_EXTRA_ARGS
// from the test, e.g. --ignore-certificate-errors-spki-list=HASH to trust the test's HTTPS
// certificate (and only that key).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const { chromium } = createRequire(join(here, "../browser/package.json"))("playwright-core");

export function launchChromium() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--autoplay-policy=no-user-gesture-required", "--mute-audio",
      ...(process.env.CHROMIUM_EXTRA_ARGS || "").split(" ").filter((a) => a),
    ],
  });
}
