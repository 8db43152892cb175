// Real-browser test of the web UI served by a running `gpuwarden run` (simulated fleet).
//
//   node tests/browser/ui.test.mjs http://127.0.0.1:9470
//
// Drives Debian's chromium (no browser download) through playwright-core and checks:
// the fleet page shows 32 GPU tiles in 4 nodes, worst first; every tile carries a
// failure-risk badge that agrees with GET /api/v1/predictions, high/critical badges look
// different from low ones; a GPU page shows identity, a score and a drawn chart, and its
// failure-risk panel shows the probability, band, model, top features and a drawn
// probability chart; the incidents page lists an open incident and its Ack button
// acknowledges it (in the page and in the API); the incident detail shows its timeline;
// a GPU that fell off the bus turns grey "unknown", never healthy, and loses its risk
// ("risk —", never a made-up 0%); the page makes no request outside the server and
// throws no script error; a page of another origin cannot resolve, acknowledge or
// silence (form post, `text/plain` fetch, JSON fetch) and a DNS-rebound host name is
// refused (421); the audit page lists the Ack with its actor and client address, and
// its result filter shows only refused requests. Screenshots of every page go to target/browser-screenshots/
// (or $GPUWARDEN_SCREENSHOTS). Exits 0 on success, 1 on failure.
//
// Preconditions: an open incident with a GPU exists (the Rust test injects a fault first;
// the script waits up to 60 s for one), and a failure model is loaded and scoring every
// few seconds (the Rust test puts one in the data dir).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const base = (process.argv[2] || '').replace(/\/$/, '');
if (!/^http:\/\/(127\.0\.0\.1|localhost):\d+$/.test(base)) {
  console.error('usage: node ui.test.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const shots = process.env.GPUWARDEN_SCREENSHOTS || path.resolve(here, '../../target/browser-screenshots');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const TOTAL_MS = 170_000;
// A name the browser resolves to 127.0.0.1 (as a DNS rebinding attacker's would).
const REBOUND = 'rebound.gpuwarden.test';

const STATE_ORDER = ['unhealthy', 'degraded', 'unknown', 'healthy'];
const BANDS = ['low', 'elevated', 'high', 'critical'];

// The UI's probability format (js/format.js fmtProb), to compare a page with the API.
function fmtProb(p) {
  const pct = p * 100;
  if (pct > 0 && pct < 0.1) return '<0.1%';
  if (pct > 99 && pct < 100) return '>99%';
  return pct < 10 ? `${+pct.toFixed(1)}%` : `${Math.round(pct)}%`;
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

async function api(method, p, body) {
  const resp = await fetch(base + p, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await resp.json().catch(() => null);
  if (!resp.ok) throw new Error(`${method} ${p}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

async function waitFor(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function step(name) {
  console.log(`--- ${name}`);
}

async function shot(page, name) {
  const file = path.join(shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`    screenshot ${file}`);
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gpuwarden-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--host-resolver-rules=MAP ${REBOUND} 127.0.0.1`,
    ],
  });
  const external = [];
  const pageErrors = [];
  // Origins the browser may reach besides the server: the "other web page" step's.
  const alsoAllowed = [];
  try {
    // Anything not addressed to the server is recorded and refused.
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith(`${base}/`) || url === base || url.startsWith('data:')) return route.continue();
      if (alsoAllowed.some((o) => url.startsWith(`${o}/`))) return route.continue();
      external.push(url);
      return route.abort();
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => m.type() === 'error' && console.log(`    console: ${m.text()}`));
    page.setDefaultTimeout(30_000);

    step('fleet page: 32 tiles in 4 nodes, worst first');
    await page.goto(`${base}/#/`);
    await page.waitForFunction(() => document.querySelectorAll('.tile').length === 32, null, { timeout: 45_000 });
    const nodes = await page.$$eval('section.node', (els) =>
      els.map((n) => ({ node: n.dataset.node, states: [...n.querySelectorAll('.tile')].map((t) => t.dataset.state) })),
    );
    assert(nodes.length === 4, `4 node groups, got ${nodes.length}`);
    for (const n of nodes) assert(n.states.length === 8, `8 tiles in ${n.node}, got ${n.states.length}`);
    const rank = (s) => STATE_ORDER.indexOf(s);
    for (const n of nodes) {
      for (let i = 1; i < n.states.length; i++) assert(rank(n.states[i - 1]) <= rank(n.states[i]), `GPUs of ${n.node} worst first: ${n.states}`);
    }
    for (let i = 1; i < nodes.length; i++) assert(rank(nodes[i - 1].states[0]) <= rank(nodes[i].states[0]), 'nodes worst first');
    const tileText = await page.textContent('.tile');
    assert(/GPU \d/.test(tileText), `tile shows the GPU index: ${tileText}`);
    const counted = await page.$$eval('.summary .count[data-state] .n', (els) => els.reduce((a, e) => a + Number(e.textContent), 0));
    assert(counted === 32, `state counts add up to 32, got ${counted}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow <= 0, `no horizontal scroll at 1280 px (overflow ${overflow})`);

    step('fleet page: failure-risk badges agree with the API');
    const preds = await waitFor('failure predictions (API)', async () => {
      const body = await api('GET', '/api/v1/predictions');
      return body.model && body.predictions.length ? body : null;
    }, 20_000);
    console.log(`    model ${preds.model}, threshold ${preds.threshold.toFixed(3)}, ${preds.predictions.length} GPUs scored`);
    // Scores move every period and the page refreshes every 5 s: compare a fresh API read
    // with the page until they meet, for every GPU whose score the page shows.
    const agreed = await waitFor('tile badges equal to the API', async () => {
      const api_ = new Map((await api('GET', '/api/v1/predictions')).predictions.map((p) => [p.gpu, p]));
      const badges = await page.$$eval('.tile', (els) => els.map((t) => {
        const r = t.querySelector('.risk');
        return { uuid: t.dataset.uuid, band: r?.dataset.band, probability: r?.dataset.probability, text: r?.textContent.trim() };
      }));
      const same = badges.filter((b) => {
        const p = api_.get(b.uuid);
        return p && b.band === p.band && Number(b.probability) === p.probability && b.text === `risk ${fmtProb(p.probability)} ${p.band}`;
      });
      return same.length ? { badges, same } : null;
    }, 20_000);
    console.log(`    ${agreed.same.length} of 32 tiles equal to the API, e.g. ${agreed.same[0].uuid}: "${agreed.same[0].text}"`);
    for (const b of agreed.badges) {
      assert(b.band, `every tile has a risk badge (${b.uuid})`);
      if (b.band === 'none') assert(b.text === 'risk —', `no prediction reads "risk —", got "${b.text}"`);
      else {
        assert(BANDS.includes(b.band), `band of ${b.uuid}: ${b.band}`);
        assert(b.text === `risk ${fmtProb(Number(b.probability))} ${b.band}`, `badge text of ${b.uuid}: "${b.text}"`);
      }
    }
    const clipped = await page.$$eval('.tile .risk', (els) => els.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.textContent));
    assert(clipped.length === 0, `risk badges fit their tiles, clipped: ${clipped.join(', ')}`);
    const wrapped = await page.$$eval('.tile .risk', (els) => els.filter((e) => {
      const range = document.createRange();
      range.selectNodeContents(e);
      return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1;
    }).length);
    console.log(`    ${wrapped} risk badge(s) wrap onto a second line at 1280 px`);
    const riskCounts = await page.$$eval('.risk-summary .count', (els) => els.reduce((a, e) => a + Number(e.querySelector('.n').textContent), 0));
    assert(riskCounts >= 1 && riskCounts <= 32, `risk summary counts scored GPUs, got ${riskCounts}`);
    // High and critical badges are solid and unlike low/elevated ones, on any tile colour.
    const looks = await page.evaluate((bands) => {
      const out = {};
      for (const band of bands) {
        const tile = document.createElement('a');
        tile.className = 'tile state-healthy';
        const r = document.createElement('span');
        r.className = `risk risk-${band}`;
        tile.append(r);
        document.body.append(tile);
        out[band] = getComputedStyle(r).backgroundColor;
        tile.remove();
      }
      return out;
    }, BANDS);
    assert(new Set(Object.values(looks)).size === 4, `each band has its own fill: ${JSON.stringify(looks)}`);
    for (const band of ['high', 'critical']) {
      const [r, g, b] = looks[band].match(/\d+/g).map(Number);
      assert(r > 100 && r > 2 * g && r > 2 * b, `${band} badge is solid red, got ${looks[band]}`);
    }

    step('an open incident exists (API)');
    // The injected fault's incident; the tiny test model may also open `prediction` ones.
    const incident = await waitFor('an open incident with a GPU', async () => {
      const body = await api('GET', '/api/v1/incidents?state=open');
      return body.incidents.find((i) => i.gpu && i.kind !== 'prediction');
    }, 60_000);
    console.log(`    ${incident.id} ${incident.severity} on ${incident.gpu}: ${incident.summary}`);
    await page.waitForFunction(
      (sev) => Number(document.querySelector(`.count[data-severity="${sev}"] .n`)?.textContent) >= 1,
      incident.severity,
      { timeout: 15_000 },
    );
    await shot(page, 'fleet');

    step('GPU page: identity, score, charts');
    const gpu = await api('GET', `/api/v1/gpus/${incident.gpu}`);
    await page.goto(`${base}/#/gpu/${encodeURIComponent(incident.gpu)}`);
    await page.waitForSelector('.identity dl');
    const identity = await page.textContent('.identity');
    for (const v of [gpu.identity.uuid, gpu.identity.node, gpu.identity.model, gpu.identity.pci_bus_id]) {
      if (v) assert(identity.includes(v), `identity shows ${v}`);
    }
    const score = (await page.textContent('#gpu-score')).trim();
    if (!gpu.stale) assert(/^\d+$/.test(score), `a numeric score for a fresh GPU, got "${score}"`);
    assert((await page.$$('table.dims tbody tr')).length === 5, 'five health dimensions');
    const reasons = gpu.health?.reasons ?? [];
    if (reasons.length) {
      const shown = await page.$$eval('.reasons li', (els) => els.map((e) => e.textContent));
      for (const r of reasons) assert(shown.some((t) => t.includes(r.reason)), `reason shown: ${r.reason}`);
    }
    await page.waitForFunction(() => {
      const c = document.querySelector('.chart:not([data-points="0"]) canvas');
      return c && c.width > 100 && c.height > 50;
    }, null, { timeout: 30_000 });
    assert(await page.isVisible(`.incidents tr[data-id="${incident.id}"]`), 'the GPU page lists its incident');
    await shot(page, 'gpu');

    step('GPU page: failure-risk panel with top features and a drawn chart');
    const explained = await waitFor('a GPU with explained risk (API)', async () =>
      (await api('GET', '/api/v1/predictions')).predictions.find((p) => p.top_features.length), 15_000);
    await page.goto(`${base}/#/gpu/${encodeURIComponent(explained.gpu)}`);
    await page.waitForSelector('#risk[data-state="scored"]', { timeout: 15_000 });
    assert((await page.textContent('#h-risk')).trim() === 'Failure risk (next 24 h)', 'panel title');
    const panel = await waitFor('the risk panel equal to the API', async () => {
      const body = await api('GET', `/api/v1/gpus/${encodeURIComponent(explained.gpu)}/predictions`);
      const shown = await page.$eval('#risk', (el) => ({
        prob: el.querySelector('#risk-prob')?.textContent.trim(),
        band: el.querySelector('#risk-band')?.textContent.trim(),
        model: el.querySelector('#risk-model')?.textContent.trim(),
        features: [...el.querySelectorAll('.risk-features tbody tr')].map((r) => ({
          name: r.dataset.feature,
          value: r.querySelector('.value').textContent.trim(),
        })),
      }));
      const p = body.latest;
      const same = p && shown.prob === fmtProb(p.probability) && shown.band === p.band && shown.model === p.model_version &&
        shown.features.length === p.top_features.length && p.top_features.every((f, i) => shown.features[i].name === f.feature);
      return same ? { shown, p } : null;
    }, 20_000);
    assert(panel.shown.model === preds.model, `panel shows the model ${preds.model}`);
    assert(panel.shown.features.length >= 1, 'at least one top feature');
    for (const [i, f] of panel.p.top_features.entries()) {
      const v = panel.shown.features[i].value;
      assert(f.value == null ? v === 'not observed' : Math.abs(Number(v) - f.value) < 0.01, `value of ${f.feature}: ${v} vs ${f.value}`);
    }
    console.log(`    ${explained.gpu}: ${panel.shown.prob} ${panel.shown.band}, top ${panel.shown.features.map((f) => `${f.name}=${f.value}`).join(', ')}`);
    await page.waitForFunction(() => {
      const fig = document.querySelector('#risk .chart');
      const c = fig?.querySelector('canvas');
      return Number(fig?.dataset.points) >= 2 && c && c.width > 100 && c.height > 50;
    }, null, { timeout: 20_000 });
    await page.locator('#risk').screenshot({ path: path.join(shots, 'gpu-risk.png') });
    console.log(`    screenshot ${path.join(shots, 'gpu-risk.png')}`);

    step('incidents page: list, Ack');
    await page.goto(`${base}/#/incidents`);
    const row = `tr[data-id="${incident.id}"]`;
    await page.waitForSelector(row);
    assert((await page.getAttribute(row, 'data-state')) === 'open', 'the incident is open in the page');
    const rowText = await page.textContent(row);
    assert(rowText.includes(incident.summary), 'row shows the summary');
    await page.click(`${row} button.ack`);
    await page.waitForSelector(`${row}[data-state="acknowledged"]`, { timeout: 15_000 });
    assert((await page.textContent(`${row} td.state`)).trim() === 'acknowledged', 'state cell says acknowledged');
    const after = await api('GET', `/api/v1/incidents/${incident.id}`);
    assert(after.state === 'acknowledged', `API state acknowledged, got ${after.state}`);
    await shot(page, 'incidents');

    step('incidents page: filter by state');
    await page.selectOption('#f-state', 'resolved');
    await page.waitForFunction(() => location.hash.includes('state=resolved'));
    await page.waitForFunction((id) => !document.querySelector(`tr[data-id="${id}"]`) && document.querySelector('.table-wrap')?.childElementCount, incident.id);

    step('incident detail: timeline');
    await page.goto(`${base}/#/incidents/${encodeURIComponent(incident.id)}`);
    await page.waitForSelector('.timeline li, .timeline + p, section h2');
    await page.waitForFunction((id) => document.querySelector('h1')?.textContent.includes(id), incident.id);
    assert((await page.textContent('h1')).includes('acknowledged'), 'detail shows the acknowledged state');
    const entries = await page.$$('.timeline li');
    assert(entries.length >= 1 || after.timeline.length === 0, 'timeline entries shown');
    await shot(page, 'incident');

    step('another web page cannot change anything; a rebound host name is refused');
    await otherOrigin(context, alsoAllowed, incident);

    step('audit page: the Ack and the refused requests, with who and from where');
    await page.goto(`${base}/#/audit`);
    const ackRow = await waitFor('the Ack in the audit trail', async () => {
      await page.waitForSelector('table.audit tbody tr', { timeout: 10_000 });
      return page.$$eval('table.audit tbody tr', (rows, id) => rows
        .map((r) => ({ result: r.dataset.result, text: r.textContent }))
        .find((r) => r.text.includes('incident.ack') && r.text.includes(id)), incident.id);
    }, 20_000);
    assert(ackRow.result === 'ok' && ackRow.text.includes('anonymous') && ackRow.text.includes('127.0.0.1'), `ack row: ${ackRow.text}`);
    await waitFor('a denied request in the audit page', async () => {
      await page.goto(`${base}/#/audit?result=denied`);
      await page.waitForSelector('table.audit tbody tr, .empty', { timeout: 10_000 });
      const results = await page.$$eval('table.audit tbody tr', (rows) => rows.map((r) => r.dataset.result));
      return results.length > 0 && results.every((r) => r === 'denied');
    }, 20_000);
    await shot(page, 'audit');

    step('stale GPU is grey "unknown"');
    const gpus = (await api('GET', '/api/v1/gpus')).gpus;
    const victim = gpus.find((g) => !g.stale && g.identity.node !== gpu.identity.node);
    assert(victim, 'a fresh GPU on another node');
    await api('POST', '/api/v1/simulation/faults', { gpu: victim.identity.uuid, kind: 'fallen-off-bus' });
    await waitFor('the GPU to go stale in the API', async () => (await api('GET', `/api/v1/gpus/${victim.identity.uuid}`)).stale, 30_000);
    await page.goto(`${base}/#/`);
    const tile = `.tile[data-uuid="${victim.identity.uuid}"]`;
    await page.waitForSelector(`${tile}[data-state="unknown"]`, { timeout: 20_000 });
    const look = await page.$eval(tile, (t) => ({
      bg: getComputedStyle(t).backgroundColor,
      score: t.querySelector('.score').textContent,
      state: t.querySelector('.state').textContent,
    }));
    const grey = await page.evaluate(() => {
      const probe = document.createElement('div');
      probe.className = 'tile state-unknown';
      document.body.append(probe);
      const c = getComputedStyle(probe).backgroundColor;
      probe.remove();
      return c;
    });
    assert(look.bg === grey && look.score === '?' && look.state === 'unknown', `stale tile grey/unknown/?: ${JSON.stringify(look)} (grey is ${grey})`);
    // Grey in absolute terms too: red, green and blue within a few steps of each other.
    const [r, g, b] = look.bg.match(/\d+/g).map(Number);
    assert(Math.max(r, g, b) - Math.min(r, g, b) <= 16, `stale tile background is grey, got ${look.bg}`);
    // A GPU without fresh data is not scored: its risk is unknown, never a number.
    await page.waitForSelector(`${tile} .risk[data-band="none"]`, { timeout: 15_000 });
    assert((await page.textContent(`${tile} .risk`)).trim() === 'risk —', 'stale tile reads "risk —"');
    await shot(page, 'fleet-stale');
    await page.goto(`${base}/#/gpu/${encodeURIComponent(victim.identity.uuid)}`);
    await page.waitForSelector('#gpu-state');
    assert((await page.textContent('#gpu-state')).trim() === 'unknown', 'stale GPU page says unknown');
    assert((await page.textContent('#gpu-score')).trim() === '?', 'stale GPU page shows "?" as score');
    await page.waitForSelector('#risk[data-state="none"], #risk[data-state="unavailable"]', { timeout: 15_000 });
    assert(!(await page.$('#risk-prob')), 'stale GPU page shows no failure probability');
    await shot(page, 'gpu-stale');

    step('laptop width (1024 px): no horizontal scroll on the fleet page');
    await page.setViewportSize({ width: 1024, height: 700 });
    await page.goto(`${base}/#/`);
    await page.waitForFunction(() => document.querySelectorAll('.tile').length === 32);
    const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert(overflow2 <= 0, `no horizontal scroll at 1024 px (overflow ${overflow2})`);

    assert(external.length === 0, `no external requests, got ${external.join(', ')}`);
    assert(pageErrors.length === 0, `no script errors, got ${pageErrors.join(' | ')}`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

// A page on a second origin (another loopback port) tries what any web site could: an
// auto-submitted form, `text/plain` fetches (no preflight) and a JSON fetch (preflight,
// never approved). The server must refuse each (415, 415, and no request at all) and
// nothing may change. Then the API is read through a DNS-rebound name: 421.
async function otherOrigin(context, alsoAllowed, incident) {
  const before = await api('GET', `/api/v1/incidents/${incident.id}`);
  const silencesBefore = (await api('GET', '/api/v1/silences')).silences.length;
  const target = (p) => `${base}${p}`;
  const resolve = target(`/api/v1/incidents/${encodeURIComponent(incident.id)}/resolve`);
  const silences = target('/api/v1/silences');
  const silence = JSON.stringify({ matchers: { rules: ['*'] }, author: 'evil', comment: 'shh', duration: '8760h' });
  const evilHtml = `<!doctype html><title>evil</title>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="${resolve}" target="sink"><input name="actor" value="evil"></form>
<script>
window.results = {};
(async () => {
  document.getElementById('f').submit();
  const tries = {
    resolve_text: () => fetch(${JSON.stringify(resolve)}, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: '{}' }),
    silence_text: () => fetch(${JSON.stringify(silences)}, { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: ${JSON.stringify(silence)} }),
    silence_json: () => fetch(${JSON.stringify(silences)}, { method: 'POST', headers: { 'content-type': 'application/json' }, body: ${JSON.stringify(silence)} }),
  };
  for (const [k, f] of Object.entries(tries)) {
    try { const r = await f(); window.results[k] = r.type + ':' + r.status; } catch (e) { window.results[k] = 'error:' + e.name; }
  }
  window.done = true;
})();
</script>`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(evilHtml);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const evil = `http://127.0.0.1:${server.address().port}`;
  alsoAllowed.push(evil, base.replace(/127\.0\.0\.1|localhost/, REBOUND));
  const page = await context.newPage();
  // What the server answered to the other page's requests (the page itself cannot see).
  const answers = [];
  page.on('response', (r) => {
    const u = r.url();
    if (u.startsWith(`${base}/api/`)) answers.push({ method: r.request().method(), url: u.slice(base.length), status: r.status() });
  });
  try {
    await page.goto(`${evil}/`);
    await page.waitForFunction(() => window.done === true, null, { timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 500)); // the form's answer into the iframe
    const results = await page.evaluate(() => window.results);
    console.log(`    other page saw ${JSON.stringify(results)}; server answered ${JSON.stringify(answers)}`);
    // The JSON fetch needs a preflight, which the server does not approve: a network error.
    assert(results.silence_json === 'error:TypeError', `JSON fetch from another origin fails, got ${results.silence_json}`);
    const posts = answers.filter((a) => a.method === 'POST');
    assert(posts.length >= 3, `the form and both text/plain fetches reached the server: ${JSON.stringify(answers)}`);
    for (const a of posts) assert(a.status === 415, `refused with 415: ${JSON.stringify(a)}`);
    const after = await api('GET', `/api/v1/incidents/${incident.id}`);
    assert(after.state === before.state && after.updated_ms === before.updated_ms, `incident unchanged: ${before.state} → ${after.state}`);
    const silencesAfter = (await api('GET', '/api/v1/silences')).silences.length;
    assert(silencesAfter === silencesBefore, `no silence created (${silencesBefore} → ${silencesAfter})`);

    // DNS rebinding: the attacker's name now points at 127.0.0.1.
    const rebound = base.replace(/127\.0\.0\.1|localhost/, REBOUND);
    const resp = await page.goto(`${rebound}/api/v1/gpus`);
    assert(resp.status() === 421, `GET through ${REBOUND}: 421, got ${resp.status()}`);
    const body = JSON.parse(await resp.text());
    assert(body.error?.code === 'host_not_allowed', `code host_not_allowed: ${JSON.stringify(body)}`);
  } finally {
    await page.close();
    server.close();
  }
}

const timer = setTimeout(() => {
  console.error(`FAIL: browser test took longer than ${TOTAL_MS / 1000} s`);
  process.exit(1);
}, TOTAL_MS);
main().then(
  () => {
    clearTimeout(timer);
    console.log('PASS: web UI browser test');
    process.exit(0);
  },
  (e) => {
    clearTimeout(timer);
    console.error(`FAIL: ${e.stack || e}`);
    process.exit(1);
  },
);
