// Headless Chromium for the player scripts of the tests (playwright-core from ../browser): the
// flags every script needs (autoplay, no GPU, no background traffic), plus CHROMIUM_EXTRA_ARGS
// from the test, e.g. --ignore-certificate-errors-spki-list=HASH to trust the test's HTTPS
// certificate (and only that key).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const { chromium } = createRequire(join(here, "../browser/package.json"))("playwright-core");

// The flags of every test browser (the WebRTC script ../browser/webrtc.mjs adds its own).
export const CHROMIUM_ARGS = [
  "--headless=new", "--no-sandbox", "--disable-quic", "--no-first-run",
  // No GPU here: without these, Debian's launcher flags (--enable-gpu-rasterization) make
  // Chromium raster and composite every video frame through SwiftShader, its GL emulated on
  // the CPU, which took as much CPU as the rest of the browser and dropped frames.
  "--disable-gpu", "--disable-gpu-rasterization", "--disable-gpu-compositing",
  "--disable-software-rasterizer",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  ...(process.env.CHROMIUM_EXTRA_ARGS || "").split(" ").filter((a) => a),
];

export function launchChromium() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [...CHROMIUM_ARGS, "--mute-audio"],
  });
}
