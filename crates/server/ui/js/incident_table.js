// The incidents table shared by the incidents page and the GPU page: one row per
// incident with its summary, GPU, node, recommended action, opened time and state, and
// Ack / Resolve buttons that call the API and then refresh the page.

import { api } from './api.js';
import { h } from './dom.js';
import { fmtAction, fmtAgo, fmtIso, fmtTime, shortUuid } from './format.js';

/** `onError(err)` shows a failed Ack/Resolve to the user. */
export function incidentTable(incidents, { onError, showGpu = true } = {}) {
  if (!incidents.length) return h('p', { class: 'muted empty' }, 'No incidents match.');
  const head = ['State', 'Severity', 'Incident', 'Summary', showGpu ? 'GPU' : null, 'Node', 'Action', 'Opened', ''].filter((x) => x !== null);
  return h(
    'table',
    { class: 'incidents' },
    h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, incidents.map((inc) => row(inc, { onError, showGpu }))),
  );
}

const STATE_TITLES = {
  clearing: 'The condition is gone; the incident resolves by itself unless it comes back',
};

export function stateBadge(state) {
  return h('span', { class: `badge ist-${state}`, title: STATE_TITLES[state] ?? null }, state);
}

export function severityBadge(sev) {
  return h('span', { class: `badge sev-${sev}` }, sev);
}

function row(inc, { onError, showGpu }) {
  return h(
    'tr',
    { dataset: { id: inc.id, state: inc.state } },
    h('td', { class: 'state' }, stateBadge(inc.state)),
    h('td', {}, severityBadge(inc.severity)),
    h('td', { class: 'nowrap' }, h('a', { href: `#/incidents/${encodeURIComponent(inc.id)}` }, inc.id), h('div', { class: 'muted small' }, inc.kind)),
    h(
      'td',
      { class: 'inc-summary' },
      inc.correlation?.root_cause ? h('strong', {}, `${inc.correlation.root_cause.title}: `) : null,
      inc.summary,
      signalsNote(inc),
    ),
    showGpu ? h('td', {}, inc.gpu ? h('a', { href: `#/gpu/${encodeURIComponent(inc.gpu)}`, title: inc.gpu }, shortUuid(inc.gpu)) : '–') : null,
    h('td', { class: 'nowrap' }, inc.node ?? '–'),
    h('td', {}, fmtAction(inc.action)),
    h('td', { class: 'nowrap' }, h('time', { datetime: fmtIso(inc.opened_ms), title: fmtTime(inc.opened_ms) }, fmtAgo(inc.opened_ms))),
    h('td', { class: 'actions' }, actionButtons(inc, { onError })),
  );
}

/** "3 signals" under a correlated incident's summary; nothing for a single signal. */
function signalsNote(inc) {
  const n = inc.correlation?.contributors?.length ?? 0;
  const related = inc.correlation?.related?.filter((r) => r.link !== 'merged').length ?? 0;
  const parts = [n > 1 ? `${n} signals` : null, related ? `${related} related` : null].filter(Boolean);
  return parts.length ? h('div', { class: 'muted small' }, parts.join(' · ')) : null;
}

/** Ack (when open or clearing, until acknowledged) and Resolve (until resolved) buttons;
 * `comment()` supplies the comment. */
export function actionButtons(inc, { onError, comment = () => '' } = {}) {
  const act = (fn, label) => async (ev) => {
    const btn = ev.currentTarget;
    btn.disabled = true;
    try {
      await fn(inc.id, comment() || `${label} from the web UI`);
      window.dispatchEvent(new Event('gw:refresh'));
    } catch (e) {
      btn.disabled = false;
      onError?.(e);
    }
  };
  return [
    inc.state === 'open' || (inc.state === 'clearing' && !inc.acknowledged_ms)
      ? h('button', { type: 'button', class: 'ack', onclick: act(api.ack, 'acknowledged'), 'aria-label': `Acknowledge ${inc.id}` }, 'Ack')
      : null,
    inc.state !== 'resolved'
      ? h('button', { type: 'button', class: 'resolve', onclick: act(api.resolve, 'resolved'), 'aria-label': `Resolve ${inc.id}` }, 'Resolve')
      : null,
  ];
}
