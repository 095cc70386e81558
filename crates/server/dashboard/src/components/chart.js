// uPlot charts: a time-series chart (axes, legend) and a bare sparkline, both sized to their
// container, coloured from the theme's CSS variables (recreated when the colour scheme changes),
// redrawn when `version` changes (the history columns are updated in place).
import { html } from "htm/preact";
import { useEffect, useRef } from "preact/hooks";
import { signal } from "@preact/signals";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

const scheme = signal(0);
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => scheme.value++);

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const WINDOW_S = 300;

/** The x range: the data's, at least a minute, at most the 5-minute window, ending now. */
function xRange(u, lo, hi) {
  const end = hi ?? Date.now() / 1000;
  return [Math.max(Math.min(lo ?? end, end - 60), end - WINDOW_S), end];
}

/**
 * series: [{label, color: "--chart-1", fill?}], data: [t, y1, y2, ...], fmt: value formatter.
 * A chart has role="img" and `label` as its accessible name (with the latest values).
 */
export function Chart({ label, series, data, version, height = 160, fmt = String, sparkline = false, min }) {
  const box = useRef(null);
  const plot = useRef(null);
  const scheme_ = scheme.value;

  useEffect(() => {
    const el = box.current;
    const text = cssVar("--muted");
    const grid = cssVar("--grid");
    const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: "11px system-ui, sans-serif" };
    const opts = {
      width: Math.max(el.clientWidth, 50),
      height,
      legend: { show: !sparkline },
      cursor: sparkline ? { show: false } : { drag: { x: false, y: false } },
      scales: { x: { time: true, range: xRange }, y: { range: (u, lo, hi) => [min ?? Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] } },
      axes: sparkline
        ? [{ show: false }, { show: false }]
        : [axis, { ...axis, size: 64, values: (u, ticks) => ticks.map(fmt) }],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: cssVar(s.color),
          fill: s.fill ? cssVar(s.color) + "22" : undefined,
          width: 1.5,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? "—" : fmt(v)),
          spanGaps: false,
        })),
      ],
    };
    plot.current = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() => plot.current.setSize({ width: Math.max(el.clientWidth, 50), height }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current.destroy();
      plot.current = null;
    };
  }, [scheme_, height, sparkline, series.length]);

  useEffect(() => {
    if (plot.current) plot.current.setData(data);
  }, [version]);

  const latest = series
    .map((s, i) => {
      const col = data[i + 1];
      const v = col && col.length ? col[col.length - 1] : null;
      return `${s.label} ${v === null || v === undefined ? "—" : fmt(v)}`;
    })
    .join(", ");
  return html`<div class=${sparkline ? "chart sparkline" : "chart"} ref=${box} role="img" aria-label=${`${label}: ${latest}`}></div>`;
}
