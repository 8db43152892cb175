// Entry point of the web UI: hash routing (#/, #/gpu/UUID, #/incidents, #/incidents/ID,
// #/audit),
// the live-refresh loop and the shared error banner.
//
// A page is a function (view, params, query) → { refresh(): Promise, dispose?() }.
// `refresh` is called at once and then every POLL_MS while "Live" is ticked and the tab
// is visible; a refresh still running is never overlapped, so a slow server is not piled on.

import { fleetPage } from './fleet.js';
import { gpuPage } from './gpu.js';
import { incidentsPage, incidentPage } from './incidents.js';
import { auditPage } from './audit.js';
import { h, replace } from './dom.js';
import { fmtTime } from './format.js';

const POLL_MS = 5000;

const view = document.getElementById('view');
const errorBox = document.getElementById('error');
const updated = document.getElementById('updated');
const live = document.getElementById('live');

let page = null;
let running = false;
let generation = 0;

function route() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { nav: 'fleet', make: () => fleetPage(view) };
  if (parts[0] === 'gpu' && parts[1]) return { nav: 'fleet', make: () => gpuPage(view, parts[1]) };
  if (parts[0] === 'incidents' && parts[1]) return { nav: 'incidents', make: () => incidentPage(view, parts[1]) };
  if (parts[0] === 'incidents') return { nav: 'incidents', make: () => incidentsPage(view, params) };
  if (parts[0] === 'audit') return { nav: 'audit', make: () => auditPage(view, params) };
  return { nav: '', make: () => notFoundPage(view, path) };
}

function notFoundPage(el, path) {
  replace(el, h('h1', {}, 'Not found'), h('p', {}, `No page "${path}". `, h('a', { href: '#/' }, 'Back to the fleet')));
  return { refresh: async () => {} };
}

/** Shows (or clears, with null) the error banner. */
export function showError(err) {
  if (!err) {
    errorBox.hidden = true;
    errorBox.textContent = '';
    return;
  }
  errorBox.hidden = false;
  errorBox.textContent = err.message || String(err);
}

async function refresh() {
  if (running || !page) return;
  running = true;
  const gen = generation;
  try {
    await page.refresh();
    if (gen === generation) {
      showError(null);
      updated.textContent = `updated ${fmtTime(Date.now())}`;
    }
  } catch (e) {
    if (gen === generation) showError(e);
  } finally {
    running = false;
  }
}

function navigate() {
  generation += 1;
  page?.dispose?.();
  const r = route();
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  showError(null);
  running = false;
  page = r.make();
  refresh();
}

window.addEventListener('hashchange', navigate);
// Pages ask for an immediate refresh after an action (e.g. Ack).
window.addEventListener('gw:refresh', () => refresh());
setInterval(() => {
  if (live.checked && !document.hidden) refresh();
}, POLL_MS);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && live.checked) refresh();
});
navigate();
