// Incidents page (#/incidents?state=&severity=&node=&kind=): filters and the incidents
// table with Ack / Resolve; and one incident's detail view (#/incidents/ID) with its
// timeline. Filters live in the URL, so a filtered view can be bookmarked or shared.

import { api } from './api.js';
import { h, replace } from './dom.js';
import { INCIDENT_STATES, SEVERITIES, KINDS, fmtAction, fmtTime, fmtAgo, fmtIso } from './format.js';
import { incidentTable, actionButtons, stateBadge, severityBadge } from './incident_table.js';

const FILTERS = ['state', 'severity', 'node', 'kind'];

export function incidentsPage(view, params) {
  let disposed = false;
  const filters = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? '']));
  const nodeSelect = select('node', 'Node', [], filters.node);
  const form = h(
    'form',
    { class: 'filters', 'aria-label': 'Filter incidents', onsubmit: (e) => e.preventDefault() },
    select('state', 'State', INCIDENT_STATES, filters.state),
    select('severity', 'Severity', SEVERITIES, filters.severity),
    nodeSelect,
    select('kind', 'Kind', KINDS, filters.kind),
  );
  form.addEventListener('change', () => {
    const q = new URLSearchParams();
    for (const f of FILTERS) if (form.elements[f].value) q.set(f, form.elements[f].value);
    location.hash = `#/incidents${q.toString() ? `?${q}` : ''}`;
  });
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const inline = h('p', { class: 'error', role: 'alert', hidden: true });
  const table = h('div', { class: 'table-wrap' });
  replace(view, h('h1', {}, 'Incidents'), form, status, inline, table);

  // Node names for the filter, once (they rarely change).
  api.gpus().then((list) => {
    const nodes = [...new Set(list.gpus.map((g) => g.identity.node))].sort();
    const sel = nodeSelect.querySelector('select');
    for (const n of nodes) if (n !== filters.node) sel.append(h('option', { value: n }, n));
  }, () => {});

  const onError = (e) => {
    inline.hidden = false;
    inline.textContent = e.message;
  };
  return {
    dispose() {
      disposed = true;
    },
    async refresh() {
      const body = await api.incidents(filters);
      if (disposed) return;
      status.textContent = `${body.total} incident${body.total === 1 ? '' : 's'}${body.total > body.incidents.length ? `, showing ${body.incidents.length}` : ''}`;
      replace(table, incidentTable(body.incidents, { onError }));
    },
  };
}

function select(name, label, options, value) {
  const id = `f-${name}`;
  const opts = [h('option', { value: '' }, 'any'), ...options.map((o) => h('option', { value: o }, o))];
  if (value && !options.includes(value)) opts.push(h('option', { value }, value));
  const sel = h('select', { id, name }, opts);
  sel.value = value;
  return h('div', { class: 'field' }, h('label', { for: id }, label), sel);
}

export function incidentPage(view, id) {
  let disposed = false;
  const head = h('div');
  const body = h('div');
  const comment = h('input', { id: 'inc-comment', type: 'text', placeholder: 'optional comment', maxlength: 500 });
  const actions = h('div', { class: 'incident-actions' });
  const inline = h('p', { class: 'error', role: 'alert', hidden: true });
  replace(
    view,
    h('p', {}, h('a', { href: '#/incidents' }, '← All incidents')),
    head,
    h('form', { class: 'act', onsubmit: (e) => e.preventDefault() }, h('label', { for: 'inc-comment' }, 'Comment'), comment, actions),
    inline,
    body,
  );
  const onError = (e) => {
    inline.hidden = false;
    inline.textContent = e.message;
  };
  return {
    dispose() {
      disposed = true;
    },
    async refresh() {
      const inc = await api.incident(id);
      if (disposed) return;
      replace(head, h('h1', {}, `${inc.id} `, stateBadge(inc.state), ' ', severityBadge(inc.severity)), h('p', { class: 'lead' }, inc.summary));
      replace(actions, actionButtons(inc, { onError, comment: () => comment.value.trim() }));
      const c = inc.correlation ?? {};
      replace(
        body,
        rootCause(c),
        details(inc),
        contributors(c.contributors ?? []),
        related(c.related ?? []),
        timeline(c.changed_before ?? [], { title: 'What changed before', empty: 'Nothing changed on this hardware in the 30 minutes before it opened (or no data was stored).', id: 'changed-before' }),
        timeline(inc.timeline ?? []),
      );
    },
  };
}

function details(inc) {
  const rows = [
    ['State', inc.state],
    ['Kind', inc.kind],
    ['Rule', inc.rule],
    ['GPU', inc.gpu ? h('a', { href: `#/gpu/${encodeURIComponent(inc.gpu)}` }, inc.gpu) : '–'],
    ['Node', inc.node],
    ['Recommended action', fmtAction(inc.action)],
    ['Opened', `${fmtTime(inc.opened_ms)} (${fmtAgo(inc.opened_ms)})`],
    ['Last seen', fmtTime(inc.last_seen_ms)],
    ['Acknowledged', inc.acknowledged_ms ? `${fmtTime(inc.acknowledged_ms)} by ${inc.acknowledged_by ?? '?'}` : null],
    ['Resolved', inc.resolved_ms ? `${fmtTime(inc.resolved_ms)}${inc.resolution ? ` (${inc.resolution})` : ''}` : null],
    ['Findings', inc.finding_count],
    ['Flaps', inc.flaps],
    ['Dedup key', h('code', {}, inc.dedup_key)],
  ].filter(([, v]) => v != null);
  return h('section', {}, h('h2', {}, 'Details'), h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
}

function rootCause(c) {
  const rc = c.root_cause;
  if (!rc) return null;
  return h(
    'section',
    { class: 'root-cause', id: 'root-cause' },
    h('h2', {}, 'Most likely root cause'),
    h('p', {}, h('strong', {}, rc.title), ` (${rc.rule})`),
    h('p', {}, rc.explanation),
    h('p', { class: 'muted' }, 'First signal of the chain: ', h('code', {}, rc.first_signal)),
    c.gpus?.length ? h('p', {}, `GPUs of the node in this incident: `, c.gpus.map((g, i) => [i ? ', ' : '', h('a', { href: `#/gpu/${encodeURIComponent(g)}` }, g)])) : null,
  );
}

function contributors(list) {
  if (!list.length) return null;
  return h(
    'section',
    { id: 'contributors' },
    h('h2', {}, 'Contributing signals'),
    h(
      'table',
      { class: 'contributors' },
      h('thead', {}, h('tr', {}, ['Signal', 'Severity', 'GPU', 'First seen', 'Last seen', 'Findings', 'Latest finding', 'Evidence'].map((t) => h('th', { scope: 'col' }, t)))),
      h(
        'tbody',
        {},
        list.map((s) =>
          h(
            'tr',
            {},
            h('td', {}, h('code', {}, s.rule), h('div', { class: 'muted small' }, s.kind)),
            h('td', {}, severityBadge(s.severity)),
            h('td', {}, s.gpu ? h('a', { href: `#/gpu/${encodeURIComponent(s.gpu)}`, title: s.gpu }, s.gpu.slice(0, 12)) : '–'),
            h('td', { class: 'nowrap' }, fmtTime(s.first_seen_ms)),
            h('td', { class: 'nowrap' }, fmtTime(s.last_seen_ms)),
            h('td', {}, String(s.findings)),
            h('td', {}, s.summary, s.first_summary !== s.summary ? h('div', { class: 'muted small' }, `first: ${s.first_summary}`) : null),
            h('td', { class: 'small' }, (s.evidence ?? []).map((e) => h('div', {}, `${e.signal} = ${e.observed}${e.expected != null ? ` (expected ${e.expected})` : ''}`))),
          ),
        ),
      ),
    ),
  );
}

function related(list) {
  if (!list.length) return null;
  return h(
    'section',
    { id: 'related' },
    h('h2', {}, 'Related incidents'),
    h('ul', {}, list.map((r) => h('li', {}, h('a', { href: `#/incidents/${encodeURIComponent(r.id)}` }, r.id), ` — ${r.note}`))),
  );
}

function timeline(items, { title = 'Timeline', empty = 'No timeline entries.', id = null } = {}) {
  const sorted = [...items].sort((a, b) => a.ts_ms - b.ts_ms);
  return h(
    'section',
    id ? { id } : {},
    h('h2', {}, title),
    sorted.length
      ? h(
          'ol',
          { class: 'timeline' },
          sorted.map((t) =>
            h(
              'li',
              { class: t.severity ? `sev-line-${t.severity}` : '' },
              h('time', { datetime: fmtIso(t.ts_ms) }, fmtTime(t.ts_ms)),
              ' ',
              h('strong', {}, t.what),
              t.severity ? [' ', severityBadge(t.severity)] : null,
              t.detail ? h('div', { class: 'detail' }, t.detail) : null,
            ),
          ),
        )
      : h('p', { class: 'muted' }, empty),
  );
}
