// GPU page (#/gpu/UUID): identity, health score with its five dimensions and every
// deduction, last-hour charts (temperature, power, utilization, SM clock, score), ECC
// and memory counters, the event history (XIDs, ECC, disappearances) and its incidents.

import { api } from './api.js';
import { h, replace, note } from './dom.js';
import { lineChart } from './charts.js';
import {
  DIMENSIONS, gpuState, gpuScore, fmtScore, fmtNum, fmtTime, fmtAgo, fmtIso,
  fmtEventKind, fmtEventDetail, stalenessText,
} from './format.js';
import { incidentTable } from './incident_table.js';

const CHARTS = [
  { field: 'DCGM_FI_DEV_GPU_TEMP', title: 'Temperature', unit: '°C', color: '#d1242f' },
  { field: 'DCGM_FI_DEV_POWER_USAGE', title: 'Power', unit: 'W', color: '#9a6700' },
  { field: 'DCGM_FI_DEV_GPU_UTIL', title: 'Utilization', unit: '%', color: '#1f6feb', range: [0, 100] },
  { field: 'DCGM_FI_DEV_SM_CLOCK', title: 'SM clock', unit: 'MHz', color: '#8250df' },
];
const MEMORY_FIELD = /ECC|REMAP|RETIRED|ROW_REMAP/;
const CHART_EVERY = 3; // refresh charts every 3rd poll: they are the costly part

export function gpuPage(view, uuid) {
  let disposed = false;
  let tick = 0;
  const head = h('div');
  const identity = h('section', { class: 'card identity', 'aria-labelledby': 'h-identity' });
  const health = h('section', { class: 'card health', 'aria-labelledby': 'h-health' });
  const charts = CHARTS.map((c) => ({ ...c, chart: lineChart(c) }));
  const scoreChart = lineChart({ title: 'Health score', unit: 'points', color: '#1a7f37', range: [0, 100] });
  const chartNote = h('p', { class: 'muted' });
  const memory = h('div');
  const events = h('div');
  const incidents = h('div');
  replace(
    view,
    h('p', {}, h('a', { href: '#/' }, '← Fleet')),
    head,
    h('div', { class: 'two' }, identity, health),
    h('section', { 'aria-labelledby': 'h-charts' }, h('h2', { id: 'h-charts' }, 'Last hour'), chartNote,
      h('div', { class: 'charts' }, charts.map((c) => c.chart.el), scoreChart.el)),
    h('div', { class: 'two' },
      h('section', { class: 'card' }, h('h2', {}, 'ECC and memory counters'), memory),
      h('section', { class: 'card' }, h('h2', {}, 'Events (last 24 h)'), events)),
    h('section', {}, h('h2', {}, 'Incidents'), incidents),
  );

  async function refreshCharts() {
    const results = await Promise.allSettled(charts.map((c) => api.series(uuid, c.field)));
    if (disposed) return;
    results.forEach((r, i) => charts[i].chart.set(r.status === 'fulfilled' ? r.value.points : []));
    const failed = results.find((r) => r.status === 'rejected');
    chartNote.textContent = failed ? `Some series could not be read: ${failed.reason.message}` : '';
    try {
      const hist = await api.healthHistory(uuid);
      if (!disposed) scoreChart.set(hist.points ?? []);
    } catch {
      if (!disposed) scoreChart.set([]);
    }
  }

  return {
    dispose() {
      disposed = true;
      charts.forEach((c) => c.chart.dispose());
      scoreChart.dispose();
    },
    async refresh() {
      const g = await api.gpu(uuid); // a missing GPU fails the whole page, with the API's message
      if (disposed) return;
      renderHead(head, g);
      renderIdentity(identity, g);
      renderHealth(health, g);
      renderMemory(memory, g);
      const [ev, inc] = await Promise.allSettled([api.events(uuid), api.incidents({ gpu: uuid, limit: 50 })]);
      if (disposed) return;
      replace(events, ev.status === 'fulfilled' ? eventTable(ev.value.events) : note(ev.reason.message, 'error'));
      replace(incidents, inc.status === 'fulfilled'
        ? incidentTable(inc.value.incidents, { showGpu: false, onError: (e) => replace(incidents, note(e.message, 'error')) })
        : note(`Incidents unavailable: ${inc.reason.message}`));
      if (tick++ % CHART_EVERY === 0) await refreshCharts();
    },
  };
}

function renderHead(el, g) {
  const id = g.identity;
  const state = gpuState(g);
  replace(
    el,
    h('h1', {}, `GPU ${id.index ?? '?'} on ${id.node} `, h('span', { class: `badge state-${state}`, id: 'gpu-state' }, state)),
    h('p', { class: 'muted' }, id.model ?? 'unknown model', ' · ', h('code', {}, id.uuid)),
  );
}

function renderIdentity(el, g) {
  const id = g.identity;
  const w = id.workload ?? {};
  const rows = [
    ['UUID', h('code', {}, id.uuid)],
    ['Node', id.node],
    ['Index', id.index],
    ['Device', id.device],
    ['Model', id.model],
    ['PCI bus', id.pci_bus_id],
    ['Driver', id.driver_version],
    ['MIG', id.mig ? JSON.stringify(id.mig) : null],
    ['Namespace', w.namespace],
    ['Pod', w.pod],
    ['Container', w.container],
    ['Job', w.job],
    ['Workload', w.namespace || w.pod || w.job ? null : 'none known'],
    ['Exporter', g.target],
    ['Last seen', h('time', { datetime: fmtIso(g.last_seen_ms) }, `${fmtTime(g.last_seen_ms)} (${fmtAgo(g.last_seen_ms)})`)],
    ['Data', h('span', { class: g.stale ? 'warn' : '' }, stalenessText(g.staleness))],
  ].filter(([, v]) => v != null && v !== '');
  replace(el, h('h2', { id: 'h-identity' }, 'Identity'), h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
}

function renderHealth(el, g) {
  const state = gpuState(g);
  const score = gpuScore(g);
  const dims = g.health?.dimensions ?? {};
  const reasons = g.health?.reasons ?? [];
  const why = g.stale
    ? `No current data (${stalenessText(g.staleness)}): the GPU is unknown, not healthy.`
    : !g.health ? 'No health verdict from the server yet.' : null;
  replace(
    el,
    h('h2', { id: 'h-health' }, 'Health'),
    h('div', { class: `bigscore state-${state}` }, h('span', { id: 'gpu-score', class: 'n' }, fmtScore(score)), h('span', {}, state)),
    why ? h('p', { class: 'muted' }, why) : null,
    h(
      'table',
      { class: 'dims' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Dimension'), h('th', { scope: 'col' }, 'Score'), h('th', { scope: 'col' }, 'Deductions'))),
      h('tbody', {}, DIMENSIONS.map((d) => dimRow(d, g.stale ? null : dims[d], reasons.filter((r) => r.dimension === d)))),
    ),
  );
}

function dimRow(dim, value, reasons) {
  const pct = typeof value === 'number' ? Math.max(0, Math.min(100, value)) : 0;
  return h(
    'tr',
    { dataset: { dimension: dim } },
    h('th', { scope: 'row' }, dim),
    h('td', { class: 'dimscore' }, fmtScore(value), h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: bar(value), style: `width:${pct}%` }))),
    h('td', {}, reasons.length
      ? h('ul', { class: 'reasons' }, reasons.sort((a, b) => b.points - a.points).map((r) =>
          h('li', {}, r.reason, ' ', h('code', { class: 'muted' }, r.rule), evidence(r.evidence))))
      : h('span', { class: 'muted' }, typeof value === 'number' ? 'none' : 'no data')),
  );
}

const bar = (v) => (typeof v !== 'number' ? 'fill state-unknown' : v >= 80 ? 'fill state-healthy' : v >= 50 ? 'fill state-degraded' : 'fill state-unhealthy');

/** Evidence items `{signal, observed, previous?, expected?, ts_ms}` as text lines. */
function evidence(ev) {
  if (!Array.isArray(ev) || !ev.length) return null;
  const line = (e) => {
    if (typeof e !== 'object' || !e) return String(e);
    const parts = [`${e.signal}: ${fmtNum(e.observed, 2)}`];
    if (typeof e.previous === 'number') parts.push(`was ${fmtNum(e.previous, 2)}`);
    if (typeof e.expected === 'number') parts.push(`limit/expected ${fmtNum(e.expected, 2)}`);
    if (typeof e.ts_ms === 'number') parts.push(`at ${fmtTime(e.ts_ms)}`);
    return parts.join(', ');
  };
  return h('details', {}, h('summary', {}, 'evidence'), h('ul', { class: 'small' }, ev.map((e) => h('li', {}, line(e)))));
}

function renderMemory(el, g) {
  const rows = Object.entries(g.latest ?? {}).filter(([k]) => MEMORY_FIELD.test(k));
  replace(el, rows.length
    ? h('table', { class: 'counters' }, h('tbody', {}, rows.map(([k, v]) =>
        h('tr', {}, h('th', { scope: 'row' }, h('code', {}, k.replace(/^DCGM_FI_DEV_/, ''))), h('td', { class: v > 0 ? 'warn num' : 'num' }, fmtNum(v, 0))))))
    : note('The exporter reports no ECC or row-remap counters for this GPU.'));
}

function eventTable(events) {
  if (!events.length) return note('No events.');
  const sorted = [...events].sort((a, b) => b.ts_ms - a.ts_ms).slice(0, 100);
  return h(
    'table',
    { class: 'events' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Time'), h('th', { scope: 'col' }, 'Event'), h('th', { scope: 'col' }, 'Detail'))),
    h('tbody', {}, sorted.map((e) => h('tr', { class: e.kind?.type === 'xid' ? 'xid' : '' },
      h('td', {}, h('time', { datetime: fmtIso(e.ts_ms) }, fmtTime(e.ts_ms))), h('td', {}, fmtEventKind(e.kind)), h('td', {}, fmtEventDetail(e.kind))))),
  );
}
