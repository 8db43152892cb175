// Audit trail page (#/audit?action=&actor=&result=&before=): every change and every
// denied request, newest first — who, what, when, from where, with what result. Filters
// and the page cursor live in the URL, so a view can be bookmarked or shared.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { fmtAgo, fmtIso, fmtTime } from './format.js';

const FILTERS = ['action', 'actor', 'result'];
const RESULTS = ['ok', 'denied', 'error'];
const PAGE = 100;

export function auditPage(view, params) {
  let disposed = false;
  const filters = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? '']));
  const before = params.get('before') ?? '';
  const text = (name, label, placeholder) =>
    h('div', { class: 'field' }, h('label', { for: `a-${name}` }, label),
      h('input', { id: `a-${name}`, name, type: 'text', value: filters[name], placeholder }));
  const resultSel = h('select', { id: 'a-result', name: 'result' },
    h('option', { value: '' }, 'any'), RESULTS.map((r) => h('option', { value: r }, r)));
  resultSel.value = filters.result;
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Filter the audit trail' },
    text('action', 'Action', 'e.g. silence.* or request.denied'),
    text('actor', 'Actor', 'e.g. anonymous'),
    h('div', { class: 'field' }, h('label', { for: 'a-result' }, 'Result'), resultSel),
    h('div', { class: 'field' }, h('span', {}, '\u00a0'), h('button', { type: 'submit' }, 'Apply')),
  );
  const go = (extra = {}) => {
    const q = new URLSearchParams();
    for (const f of FILTERS) if (form.elements[f].value.trim()) q.set(f, form.elements[f].value.trim());
    for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
    location.hash = `#/audit${q.toString() ? `?${q}` : ''}`;
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    go();
  });
  resultSel.addEventListener('change', () => go());
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const table = h('div', { class: 'table-wrap' });
  const pager = h('p', { class: 'pager' });
  replace(
    view,
    h('h1', {}, 'Audit trail'),
    h('p', { class: 'muted' }, 'Every change and every refused request, hash-chained: ', h('code', {}, 'gpuwarden audit verify'),
      ' checks that none was edited, removed or moved. Repeated refusals from one client are counted in one record.'),
    form,
    status,
    table,
    pager,
  );
  return {
    dispose() {
      disposed = true;
    },
    async refresh() {
      const body = await api.audit({ ...filters, before, limit: PAGE });
      if (disposed) return;
      const n = body.records.length;
      status.textContent = n ? `${n} record${n === 1 ? '' : 's'}${before ? ` before #${before}` : ''}` : '';
      replace(table, auditTable(body.records));
      replace(
        pager,
        before ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); go(); } }, '← Newest') : null,
        before && body.next_before ? ' · ' : null,
        body.next_before
          ? h('a', { href: '#', onclick: (e) => { e.preventDefault(); go({ before: String(body.next_before) }); } }, 'Older →')
          : null,
      );
    },
  };
}

function resultBadge(r) {
  const cls = r.result === 'ok' ? 'ist-resolved' : r.result === 'denied' ? 'ist-open' : 'ist-acknowledged';
  return h('span', { class: `badge ${cls}` }, r.status ? `${r.result} ${r.status}` : r.result);
}

export function auditTable(records) {
  if (!records.length) return h('p', { class: 'muted empty' }, 'No audit records match.');
  const head = ['#', 'When', 'Actor', 'Action', 'Target', 'Result', 'From', 'Detail'];
  return h(
    'table',
    { class: 'audit' },
    h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))),
    h(
      'tbody',
      {},
      records.map((r) =>
        h(
          'tr',
          { dataset: { seq: r.seq, result: r.result } },
          h('td', { class: 'nowrap', title: `hash ${r.hash}` }, String(r.seq)),
          h('td', { class: 'nowrap' }, h('time', { datetime: fmtIso(r.ts_ms), title: fmtTime(r.ts_ms) }, fmtAgo(r.ts_ms))),
          h('td', {}, r.actor, h('div', { class: 'muted small' }, [r.role, r.tenant].filter(Boolean).join(' · '))),
          h('td', { class: 'nowrap' }, h('code', {}, r.action)),
          h('td', { class: 'inc-summary' }, r.target ?? '–'),
          h('td', { class: 'nowrap' }, resultBadge(r)),
          h('td', { class: 'nowrap' }, r.client ?? '–'),
          h('td', {}, r.detail ?? '', r.count > 1 ? h('strong', {}, ` ×${r.count}`) : null),
        ),
      ),
    ),
  );
}
