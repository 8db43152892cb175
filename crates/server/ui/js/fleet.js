// Fleet page (#/): counts by health state and open incidents by severity at the top, then
// every GPU as a tile coloured by state, grouped by node; nodes and GPUs worst first.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { STATES, SEVERITIES, gpuState, gpuScore, stateRank, mainReason, fmtScore } from './format.js';

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
      // The summary only adds open incidents: the page still works while it is missing.
      const [list, sum] = await Promise.all([api.gpus(), api.summary().catch((e) => ({ error: e }))]);
      if (disposed) return;
      renderSummary(summary, list.gpus, sum);
      renderNodes(nodes, list.gpus);
    },
  };
}

function renderSummary(el, gpus, sum) {
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
  );
}

const byWorst = (a, b) =>
  stateRank(gpuState(a)) - stateRank(gpuState(b)) ||
  (gpuScore(a) ?? 101) - (gpuScore(b) ?? 101) ||
  (a.identity.index ?? 0) - (b.identity.index ?? 0);

function renderNodes(el, gpus) {
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
  replace(el, nodes.map(renderNode));
}

function renderNode({ node, list }) {
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
    h('ul', { class: 'tiles' }, list.map((g) => h('li', {}, tile(g)))),
  );
}

function tile(g) {
  const id = g.identity;
  const state = gpuState(g);
  const reason = mainReason(g);
  const label = `GPU ${id.index ?? '?'} on ${id.node}: ${state}, score ${fmtScore(gpuScore(g))}. ${reason}`;
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
    state !== 'healthy' ? h('span', { class: 'reason' }, reason) : null,
  );
}
