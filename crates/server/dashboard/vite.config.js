// Build of the dashboard: one JS bundle and one CSS file under fixed names (dist/assets/app.js,
// dist/assets/app.css) that the Rust server embeds and serves at / and /assets/*. `npm run dev`
// serves it with the API proxied to a running Sluice (SLUICE_API, default 127.0.0.1:9997).
import { defineConfig } from "vite";

const api = process.env.SLUICE_API || "http://127.0.0.1:9997";

/** Drops the indentation of the app's sources, inside html`` templates too (htm ignores
 * whitespace that holds a newline, and the browser collapses it anyway): a smaller bundle. */
function dropIndentation() {
  return {
    name: "sluice-drop-indentation",
    apply: "build",
    transform(code, id) {
      return id.includes("/src/") && id.endsWith(".js") ? { code: code.replace(/\n[ \t]+/g, "\n"), map: null } : null;
    },
  };
}

export default defineConfig({
  base: "/",
  plugins: [dropIndentation()],
  publicDir: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    modulePreload: false,
    cssCodeSplit: false,
    assetsInlineLimit: 0,
    reportCompressedSize: true,
    rollupOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/app-[name].js",
        assetFileNames: "assets/app[extname]",
      },
    },
  },
  server: {
    proxy: { "/v1": { target: api } },
  },
});
