// GPU page (#/gpu/UUID): identity, health score with its five dimensions and every
// deduction, the failure risk (probability of a hard failure within 24 h, its band, the
// features that raised it, the model, and the probability history), last-hour charts
// (temperature, power, utilization, SM clock, score), ECC and memory counters, the event
// history (XIDs, ECC, disappearances) and its incidents.

import { api } from './api.js';
import { h, replace, note } from './dom.js';
import { lineChart } from './charts.js';
import {
  DIMENSIONS, gpuState, healthState, gpuScore, fmtScore, fmtNum, fmtTime, fmtAgo, fmtIso,
  fmtEventKind, fmtEventDetail, stalenessText, fmtProb, fmtContribution,
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
  const risk = h('section', { class: 'card risk-panel', id: 'risk', 'aria-labelledby': 'h-risk' });
  const riskInfo = h('div', { class: 'risk-info' }, h('p', { class: 'muted' }, 'Loading…'));
  const riskChart = lineChart({
    title: 'Failure probability',
    unit: '%',
    color: '#cf222e',
    // From 0, and at least up to the threshold line so it is always in view.
    range: (u, min, max) => [0, Math.min(100, Math.max(1, max, u.data[2]?.find((v) => v != null) ?? 0) * 1.15)],
    refLine: { label: 'threshold', color: '#57606a' },
    dots: true,
    emptyText: 'No scores stored yet.',
  });
  replace(risk, h('h2', { id: 'h-risk' }, 'Failure risk (next 24 h)'), h('div', { class: 'risk-body' }, riskInfo, riskChart.el));
  const memory = h('div');
  const events = h('div');
  const incidents = h('div');
  replace(
    view,
    h('p', {}, h('a', { href: '#/' }, '← Fleet')),
    head,
    h('div', { class: 'two' }, identity, health),
    risk,
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
      riskChart.dispose();
    },
    async refresh() {
      const g = await api.gpu(uuid); // a missing GPU fails the whole page, with the API's message
      if (disposed) return;
      renderHead(head, g);
      renderIdentity(identity, g);
      renderHealth(health, g);
      renderMemory(memory, g);
      const [ev, inc, pred] = await Promise.allSettled([
        api.events(uuid),
        api.incidents({ gpu: uuid, limit: 50 }),
        api.gpuPredictions(uuid),
      ]);
      if (disposed) return;
      renderRisk(risk, riskInfo, riskChart, pred);
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

/**
 * The failure-risk panel from GET /api/v1/gpus/{uuid}/predictions (a settled promise):
 * probability and band, threshold, when scored, the model, the top contributing features
 * with their values, and the probability history as a chart with the threshold line.
 * Without a model or a current prediction it says so: never a made-up 0%.
 */
function renderRisk(section, info, chart, settled) {
  if (settled.status === 'rejected') {
    const e = settled.reason;
    section.dataset.state = 'unavailable';
    const text = e.code === 'no_predictor'
      ? 'Failure prediction does not run in this gpuwarden process.'
      : e.code === 'gpu_not_found' ? 'No failure prediction for this GPU.' : `Failure risk unavailable: ${e.message}`;
    replace(info, note(text));
    chart.set([]);
    return;
  }
  const body = settled.value;
  const horizon = body.horizon_hours ?? 24;
  section.querySelector('h2').textContent = `Failure risk (next ${fmtNum(horizon, 0)} h)`;
  chart.set((body.history ?? []).map((p) => [p.ts_ms, p.probability * 100]), body.threshold * 100);
  if (!body.model) {
    section.dataset.state = 'no-model';
    replace(info, h('p', { class: 'muted' }, 'No failure model yet: run ', h('code', {}, 'gpuwarden train'), '; the model is picked up without a restart.'));
    return;
  }
  const p = body.latest;
  if (!p) {
    section.dataset.state = 'none';
    replace(
      info,
      h('p', {}, h('span', { class: 'riskbadge risk-none', id: 'risk-band' }, 'risk —')),
      note('No current prediction: GPUs are scored each period while their data is fresh.'),
      h('dl', { class: 'kv' }, h('dt', {}, 'Model'), h('dd', {}, h('code', { id: 'risk-model' }, body.model))),
    );
    return;
  }
  section.dataset.state = 'scored';
  section.dataset.band = p.band;
  const rows = [
    ['Band', h('span', { class: `riskbadge risk-${p.band}`, id: 'risk-band' }, p.band)],
    ['Incident at', `${fmtProb(body.threshold)} or more (drain before failure)`],
    ['Scored', h('time', { datetime: fmtIso(p.ts_ms) }, `${fmtTime(p.ts_ms)} (${fmtAgo(p.ts_ms)})`)],
    ['Model', h('code', { id: 'risk-model' }, p.model_version)],
  ];
  replace(
    info,
    h('div', { class: `bigrisk risk-${p.band}` }, h('span', { id: 'risk-prob', class: 'n' }, fmtProb(p.probability)), h('span', {}, 'probability of a hard failure')),
    h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    h('h3', {}, 'Top contributing features'),
    riskFeatures(p),
  );
}

function riskFeatures(p) {
  const top = p.top_features ?? [];
  if (!top.length) {
    return note(p.band === 'low'
      ? 'Low risk: no feature stands out (reasons are listed from elevated risk up).'
      : 'The model reported no contributing features.');
  }
  const most = Math.max(...top.map((f) => Math.abs(f.contribution)), 1e-9);
  return h(
    'table',
    { class: 'risk-features' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Feature'), h('th', { scope: 'col', class: 'num' }, 'Value'), h('th', { scope: 'col' }, 'Contribution (log-odds)'))),
    h('tbody', {}, top.map((f) => h(
      'tr',
      { dataset: { feature: f.feature } },
      h('th', { scope: 'row' }, h('code', {}, f.feature)),
      h('td', { class: 'num value' }, f.value == null ? 'not observed' : fmtNum(f.value, 2)),
      h('td', { class: 'contrib' }, fmtContribution(f.contribution),
        h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: 'fill', style: `width:${Math.round((Math.abs(f.contribution) / most) * 100)}%` }))),
    ))),
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
  // The health panel shows the measured health; the page's badge (and this note) the
  // GPU's state with its open incidents.
  const state = healthState(g);
  const overall = gpuState(g);
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
    overall !== state
      ? h('p', { class: `status-note state-${overall}`, id: 'gpu-status-reason' }, `The GPU is ${overall}: ${g.status?.reason ?? 'open incidents'}`)
      : null,
    h(
      'table',
      { class: 'dims' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Dimension'), h('th', { scope: 'col' }, 'Score'), h('th', { scope: 'col' }, 'Deductions'))),
      h('tbody', {}, DIMENSIONS.map((d) => dimRow(d, g.stale ? null : dims[d], reasons.filter((r) => r.dimension === d), measuredNull(g, d)))),
    ),
  );
}

// A dimension the server sent as null for a GPU with fresh data and a verdict was not
// measured: the exporter has no input field for it. Shown as such, never as a green 100.
function measuredNull(g, d) {
  return !g.stale && !!g.health && g.health.dimensions?.[d] == null;
}

function dimRow(dim, value, reasons, notMeasured = false) {
  const pct = typeof value === 'number' ? Math.max(0, Math.min(100, value)) : 0;
  return h(
    'tr',
    { dataset: { dimension: dim } },
    h('th', { scope: 'row' }, dim),
    h('td', { class: 'dimscore' }, notMeasured ? 'not measured' : fmtScore(value), h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: bar(value), style: `width:${pct}%` }))),
    h('td', {}, reasons.length
      ? h('ul', { class: 'reasons' }, reasons.sort((a, b) => b.points - a.points).map((r) =>
          h('li', {}, r.reason, ' ', h('code', { class: 'muted' }, r.rule), evidence(r.evidence))))
      : h('span', { class: 'muted' }, typeof value === 'number' ? 'none' : notMeasured ? 'no input field for this dimension on this GPU' : 'no data')),
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
