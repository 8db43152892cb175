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
import { whoami, signIn, signOut, signInMethods } from './api.js';
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

let signingIn = false;

/** The sign-in form, shown whenever the API answers 401 (authentication is on and this
 * browser has no valid session). The token is sent once; the session cookie replaces it. */
function signInPage() {
  signingIn = true;
  page?.dispose?.();
  page = null;
  showError(null);
  const input = h('input', { type: 'password', id: 'token', name: 'token', autocomplete: 'off', required: true, size: 50, placeholder: 'gpw_…' });
  const status = h('p', { class: 'muted', 'aria-live': 'polite' });
  const form = h('form', { class: 'signin', onsubmit: async (ev) => {
    ev.preventDefault();
    status.textContent = 'Signing in…';
    try {
      await signIn(input.value.trim());
      input.value = '';
      signingIn = false;
      await showUser();
      navigate();
    } catch (e) {
      status.textContent = e.status === 401 ? 'That token is not valid here.' : e.message;
    }
  } },
    h('label', { for: 'token' }, 'API token'), ' ', input, ' ',
    h('button', { type: 'submit' }, 'Sign in'), status);
  // Sign-in through the OpenID provider, when configured: a plain link (the provider's
  // pages are a full navigation; the server finishes at /auth/oidc/callback).
  const provider = h('div', { class: 'signin-provider' });
  replace(view, h('h1', {}, 'Sign in'), provider,
    h('p', {}, 'This gpuwarden requires authentication. Paste an API token (an admin creates one with ',
      h('code', {}, 'gpuwarden auth token create --role viewer'), ').'), form);
  updated.textContent = 'signed out';
  input.focus();
  signInMethods().then((m) => {
    if (!m.oidc) return;
    replace(provider, h('p', {},
      h('a', { class: 'button oidc-signin', href: m.oidc.login_url }, `Sign in with ${m.oidc.name}`),
      ' or use an API token below.'));
  }).catch(() => {});
}

const userBox = h('span', { class: 'user' });
document.querySelector('.live')?.prepend(userBox);

/** Shows who is signed in (and a sign-out button for a session). */
async function showUser() {
  try {
    const me = await whoami();
    if (me.via === 'anonymous') {
      replace(userBox);
      return;
    }
    const out = me.via === 'session'
      ? h('button', { type: 'button', onclick: async () => { await signOut().catch(() => {}); replace(userBox); signInPage(); } }, 'Sign out')
      : null;
    replace(userBox, `${me.id} (${me.role}${me.tenant ? `, ${me.tenant}` : ''}) `, out, ' ');
  } catch (e) {
    replace(userBox);
    if (e.status === 401) signInPage();
  }
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
    if (e.status === 401) signInPage();
    else if (gen === generation) showError(e);
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
  if (live.checked && !document.hidden && !signingIn) refresh();
}, POLL_MS);
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && live.checked && !signingIn) refresh();
});
showUser().then(() => {
  if (!signingIn) navigate();
});
