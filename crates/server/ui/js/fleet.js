// Fleet page (#/): counts by state, open incidents by severity and GPUs by failure
// risk at the top, then every GPU as a tile coloured by its state (health raised by its
// open security, failure-risk and anomaly incidents), grouped by node; nodes and
// GPUs worst first. Each tile carries the GPU's failure risk (probability of a hard
// failure within 24 h and its band) from one fleet-wide GET /api/v1/predictions per
// refresh; "risk —" when the GPU has no current prediction, nothing when no model runs.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { STATES, SEVERITIES, RISK_BANDS, gpuState, gpuScore, stateRank, mainReason, fmtScore, fmtProb } from './format.js';

export function fleetPage(view) {
  let disposed = false;
  const summary = h('section', { class: 'summary', 'aria-label': 'Fleet summary' });
  const nodes = h('div', { class: 'nodes' });
  replace(view, h('h1', {}, 'Fleet'), summary, nodes);

  return {
    dispose() {
      disposed = true;
    },
    async refresh() {
      // The summary and the predictions only add to the tiles: the page still works while
      // either is missing.
      const [list, sum, preds] = await Promise.all([
        api.gpus(),
        api.summary().catch((e) => ({ error: e })),
        api.predictions().catch((e) => ({ error: e })),
      ]);
      if (disposed) return;
      const risk = riskIndex(preds);
      renderSummary(summary, list.gpus, sum, risk);
      renderNodes(nodes, list.gpus, risk);
    },
  };
}

/**
 * The fleet's predictions as `{ running, model, threshold, byGpu, error }`: `running` is
 * false where this server does not predict (404); `model` is null until one is trained.
 */
function riskIndex(preds) {
  if (preds.error) {
    const notRunning = preds.error.status === 404;
    return { running: !notRunning, model: null, threshold: null, byGpu: new Map(), error: notRunning ? null : preds.error };
  }
  return {
    running: true,
    model: preds.model ?? null,
    threshold: preds.threshold,
    byGpu: new Map((preds.predictions ?? []).map((p) => [p.gpu, p])),
    error: null,
  };
}

function riskSummary(risk) {
  if (!risk.running) return null;
  let body;
  if (risk.error) body = h('p', { class: 'muted' }, `Failure risk unavailable: ${risk.error.message}`);
  else if (!risk.model) body = h('p', { class: 'muted', id: 'risk-no-model' }, 'No failure model yet: run ', h('code', {}, 'gpuwarden train'), '.');
  else {
    const counts = Object.fromEntries(RISK_BANDS.map((b) => [b, 0]));
    for (const p of risk.byGpu.values()) if (p.band in counts) counts[p.band] += 1;
    body = h(
      'ul',
      { class: 'counts' },
      RISK_BANDS.map((b) =>
        h('li', { class: `count risk-${b}`, dataset: { band: b } }, h('span', { class: 'n' }, counts[b]), h('span', {}, b)),
      ),
    );
  }
  return h('div', { class: 'risk-summary' }, h('h2', {}, 'Failure risk (24 h)'), body);
}

function renderSummary(el, gpus, sum, risk) {
  const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
  for (const g of gpus) counts[gpuState(g)] += 1;
  const nodeCount = new Set(gpus.map((g) => g.identity.node)).size;
  const stateBoxes = ['healthy', 'degraded', 'unhealthy', 'unknown'].map((s) =>
    h('li', { class: `count state-${s}`, dataset: { state: s } }, h('span', { class: 'n' }, counts[s]), h('span', {}, s)),
  );
  let incidents;
  if (sum.error) {
    incidents = h('p', { class: 'muted' }, `Open incidents unavailable: ${sum.error.message}`);
  } else {
    const open = sum.open_incidents ?? {};
    incidents = h(
      'ul',
      { class: 'counts' },
      SEVERITIES.map((s) =>
        h(
          'li',
          { class: `count sev-${s}`, dataset: { severity: s } },
          h('a', { href: `#/incidents?state=open&severity=${s}` }, h('span', { class: 'n' }, open[s] ?? 0), h('span', {}, s)),
        ),
      ),
    );
  }
  replace(
    el,
    h('div', {}, h('h2', {}, `${gpus.length} GPUs on ${nodeCount} nodes`), h('ul', { class: 'counts' }, stateBoxes)),
    h('div', {}, h('h2', {}, 'Open incidents'), incidents),
    riskSummary(risk),
  );
}

const byWorst = (a, b) =>
  stateRank(gpuState(a)) - stateRank(gpuState(b)) ||
  (gpuScore(a) ?? 101) - (gpuScore(b) ?? 101) ||
  (a.identity.index ?? 0) - (b.identity.index ?? 0);

function renderNodes(el, gpus, risk) {
  const groups = new Map();
  for (const g of gpus) {
    if (!groups.has(g.identity.node)) groups.set(g.identity.node, []);
    groups.get(g.identity.node).push(g);
  }
  const nodes = [...groups.entries()].map(([node, list]) => ({ node, list: list.sort(byWorst) }));
  // A node is as bad as its worst GPU; ties by how many GPUs are not healthy, then name.
  const bad = (n) => n.list.filter((g) => gpuState(g) !== 'healthy').length;
  nodes.sort((a, b) => byWorst(a.list[0], b.list[0]) || bad(b) - bad(a) || a.node.localeCompare(b.node));
  if (nodes.length === 0) {
    replace(el, h('p', { class: 'muted' }, 'No GPUs yet: waiting for the first scrape.'));
    return;
  }
  replace(el, nodes.map((n) => renderNode(n, risk)));
}

function renderNode({ node, list }, risk) {
  const worst = gpuState(list[0]);
  const counts = STATES.map((s) => [s, list.filter((g) => gpuState(g) === s).length]).filter(([, n]) => n);
  return h(
    'section',
    { class: 'node', dataset: { node, state: worst }, 'aria-label': `Node ${node}` },
    h(
      'h2',
      {},
      h('span', { class: `dot state-${worst}`, 'aria-hidden': 'true' }),
      node,
      h('small', { class: 'muted' }, ` ${list.length} GPUs · ${counts.map(([s, n]) => `${n} ${s}`).join(', ')}`),
    ),
    h('ul', { class: 'tiles' }, list.map((g) => h('li', {}, tile(g, risk)))),
  );
}

/**
 * The tile's risk badge: "risk 12% elevated", or "risk —" when a model runs but this GPU
 * has no current prediction (stale, or not scored yet); none when no model runs.
 */
function riskBadge(uuid, risk) {
  if (!risk.running || !risk.model) return null;
  const p = risk.byGpu.get(uuid);
  if (!p) {
    return h('span', { class: 'risk risk-none', dataset: { band: 'none' }, title: 'No current failure prediction for this GPU' }, 'risk —');
  }
  return h(
    'span',
    {
      class: `risk risk-${p.band}`,
      dataset: { band: p.band, probability: p.probability },
      title: `Probability of a hard failure within 24 h: ${fmtProb(p.probability)} (${p.band}; an incident opens at ${fmtProb(risk.threshold)})`,
    },
    `risk ${fmtProb(p.probability)} `,
    h('span', { class: 'band' }, p.band),
  );
}

function riskText(uuid, risk) {
  if (!risk.running || !risk.model) return '';
  const p = risk.byGpu.get(uuid);
  return p ? ` Failure risk ${fmtProb(p.probability)} (${p.band}).` : ' No current failure prediction.';
}

function tile(g, risk) {
  const id = g.identity;
  const state = gpuState(g);
  const reason = mainReason(g);
  const label = `GPU ${id.index ?? '?'} on ${id.node}: ${state}, health score ${fmtScore(gpuScore(g))}. ${reason}${riskText(id.uuid, risk)}`;
  // Open security / failure-risk / anomaly incidents, worst first: a badge on the tile.
  const top = (g.status?.incidents ?? [])[0];
  return h(
    'a',
    {
      class: `tile state-${state}`,
      href: `#/gpu/${encodeURIComponent(id.uuid)}`,
      title: label,
      'aria-label': label,
      dataset: { uuid: id.uuid, state },
    },
    h('span', { class: 'idx' }, `GPU ${id.index ?? '?'}`),
    h('span', { class: 'score' }, fmtScore(gpuScore(g))),
    h('span', { class: 'state' }, state),
    h('span', { class: 'model' }, (id.model ?? 'unknown model').replace(/^NVIDIA /, '')),
    riskBadge(id.uuid, risk),
    top ? h('span', { class: `incident-badge sev-${top.severity}`, dataset: { kind: top.kind, severity: top.severity } }, `${top.severity} ${top.kind}`) : null,
    state !== 'healthy' ? h('span', { class: 'reason' }, reason) : null,
  );
}
