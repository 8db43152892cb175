// Time-series charts with the vendored uPlot: one small line chart per metric, created
// once and fed new points on refresh, resized with its container.

import uPlot from '../vendor/uPlot.esm.js';
import { h } from './dom.js';

const HEIGHT = 180;

/**
 * A chart card: `{ el, set(points, ref), dispose() }`. `points` are `[[ts_ms, value], …]`.
 * The card's `data-points` attribute holds the number of points drawn (tests read it).
 * `range` is uPlot's y range (`[min, max]` or a function); `refLine: { label, color }`
 * adds a dashed horizontal line at the `ref` value given to `set` (e.g. a threshold);
 * `dots` marks the points where they are sparse (uPlot's default), for series scored
 * minutes apart.
 */
export function lineChart({ title, unit, color = '#1f6feb', range, refLine, dots = false, emptyText = 'No data in the last hour.' }) {
  const plotBox = h('div', { class: 'plot' });
  const empty = h('p', { class: 'muted chart-empty' }, emptyText);
  const latest = h('span', { class: 'latest' });
  const el = h('figure', { class: 'chart', dataset: { points: '0' } }, h('figcaption', {}, `${title} (${unit})`, latest), plotBox, empty);
  let plot = null;
  let data = refLine ? [[], [], []] : [[], []];

  const width = () => Math.max(240, plotBox.clientWidth || 400);
  const make = () => {
    const opts = {
      width: width(),
      height: HEIGHT,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: range ? { range } : {} },
      axes: [{}, { size: 56, values: (u, vals) => vals.map((v) => `${v}`) }],
      series: [{}, { label: title, stroke: color, width: 1.5, fill: `${color}22`, ...(dots ? {} : { points: { show: false } }) }],
    };
    if (refLine) opts.series.push({ label: refLine.label, stroke: refLine.color ?? '#57606a', width: 1, dash: [6, 4], points: { show: false } });
    plot = new uPlot(opts, data, plotBox);
  };
  const resize = new ResizeObserver(() => plot && plot.setSize({ width: width(), height: HEIGHT }));
  resize.observe(plotBox);

  return {
    el,
    set(points, ref) {
      data = [points.map((p) => p[0] / 1000), points.map((p) => p[1])];
      if (refLine) data.push(points.map(() => (typeof ref === 'number' ? ref : null)));
      el.dataset.points = String(points.length);
      const last = points.at(-1);
      latest.textContent = last ? `latest ${+last[1].toFixed(1)} ${unit}` : '';
      empty.hidden = points.length > 0;
      if (!plot) make();
      else plot.setData(data);
    },
    dispose() {
      resize.disconnect();
      plot?.destroy();
    },
  };
}
