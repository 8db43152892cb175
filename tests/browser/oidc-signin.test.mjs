// Real-browser sign-in through a real OpenID provider (oidc-provider.mjs), against a
// running `gpuwarden run` with [auth.oidc] (the Rust test crates/gpuwarden/tests/
// auth_oidc.rs starts both):
//
//   node tests/browser/oidc-signin.test.mjs http://127.0.0.1:GW_PORT
//
// Checks: the sign-in page offers "Sign in with Test IdP" beside the token form; the
// provider's own login and consent pages sign `otto` in, gpuwarden's UI then shows the
// fleet as `operator`, the session cookie is HttpOnly, Secure, SameSite=Strict, and a
// change with it needs the CSRF header; sign-out ends the session; a refused consent, an
// account whose groups map to no role, and a forged `state` each end on a clear page (no
// 500); a tenant account (`tia`) is shown with its tenant. Exits 0 on success.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const base = (process.argv[2] || '').replace(/\/$/, '');
if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(base)) {
  console.error('usage: node oidc-signin.test.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function step(name) {
  console.log(`  - ${name}`);
}

/** From gpuwarden's sign-in page through the provider's login (and consent) pages. */
async function signInAs(page, login, { consent = true } = {}) {
  await page.goto(`${base}/#/`);
  const link = page.locator('a.oidc-signin');
  await link.waitFor();
  assert((await link.textContent()).includes('Sign in with Test IdP'), 'the provider is named');
  await link.click();
  await page.waitForSelector('input[name=login]');
  assert(!page.url().startsWith(base), `on the provider's page: ${page.url()}`);
  await page.fill('input[name=login]', login);
  await page.fill('input[name=password]', 'any password');
  await page.click('button[type=submit]');
  await page.waitForSelector('input[name=prompt][value=consent]', { state: 'attached' });
  if (!consent) {
    await page.click('text=[ Cancel ]');
    return;
  }
  await page.click('button[type=submit]');
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gpuwarden-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const pageErrors = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.setDefaultTimeout(30_000);

    step('the sign-in page offers the provider beside the token form');
    await page.goto(`${base}/#/`);
    await page.waitForSelector('form.signin input#token');
    await page.waitForSelector('a.oidc-signin');

    step("otto signs in through the provider's login and consent pages");
    await signInAs(page, 'otto');
    await page.waitForURL(`${base}/**`);
    await page.waitForFunction(() => document.querySelectorAll('.tile').length > 0, null, { timeout: 45_000 });
    await page.waitForFunction(() => document.querySelector('.user')?.textContent.includes('operator'));
    const who = await page.evaluate(async () => (await fetch('/api/v1/auth/whoami')).json());
    assert(who.role === 'operator' && who.via === 'session' && who.id.endsWith('#otto'), JSON.stringify(who));

    step('the session cookie: HttpOnly, Secure, SameSite=Strict; the login cookie is gone');
    const cookies = await context.cookies();
    const c = cookies.find((k) => k.name === 'gpw_session');
    assert(c && c.httpOnly && c.secure && c.sameSite === 'Strict', JSON.stringify(cookies));
    assert(!cookies.some((k) => k.name === 'gpw_oidc_state'), 'state cookie cleared');

    step('a change with the cookie needs the CSRF header; the UI sends it');
    const bare = await page.evaluate(async () => (await fetch('/api/v1/incidents/01JZZZZZZZZZZZZZZZZZZZZZZZ/ack', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status);
    assert(bare === 403, `no CSRF header: 403, got ${bare}`);
    const viaUi = await page.evaluate(async () => {
      const { api } = await import('/ui/js/api.js');
      try { await api.ack('01JZZZZZZZZZZZZZZZZZZZZZZZ', 'oidc browser test'); return 200; } catch (e) { return e.status; }
    });
    assert(viaUi === 404, `an operator's ack gets past authentication (404: no such incident), got ${viaUi}`);

    step('sign out ends the session');
    await page.click('.user button');
    await page.waitForSelector('form.signin input#token');
    const after = await page.evaluate(async () => (await fetch('/api/v1/gpus')).status);
    assert(after === 401, `after sign-out: 401, got ${after}`);

    step('a refused consent ends on a clear page, not a 500');
    await context.clearCookies();
    let resp = null;
    page.on('response', (r) => { if (r.url().startsWith(`${base}/auth/oidc/callback`)) resp = r; });
    await signInAs(page, 'otto', { consent: false });
    await page.waitForSelector('#reason');
    assert((await page.textContent('h1')).includes('not completed'), await page.textContent('body'));
    assert(resp && resp.status() === 401, `callback status ${resp?.status()}`);

    step('an account whose groups map to no role is refused with a clear page');
    await context.clearCookies();
    resp = null;
    await signInAs(page, 'ivan');
    await page.waitForSelector('#reason');
    assert((await page.textContent('h1')).includes('no role'), await page.textContent('body'));
    assert((await page.textContent('#reason')).includes('[auth.oidc.roles]'), await page.textContent('#reason'));
    assert(resp && resp.status() === 403, `callback status ${resp?.status()}`);
    assert(!(await context.cookies()).some((k) => k.name === 'gpw_session'), 'no session for ivan');

    step('a forged state is refused');
    const r = await page.goto(`${base}/auth/oidc/callback?code=abc&state=forged`);
    assert(r.status() === 400, `forged state: 400, got ${r.status()}`);
    assert((await page.textContent('h1')).includes('not valid'), await page.textContent('body'));

    step('a tenant account signs in confined to its tenant');
    await context.clearCookies();
    await signInAs(page, 'tia');
    await page.waitForURL(`${base}/**`);
    await page.waitForFunction(() => document.querySelector('.user')?.textContent.includes('team-a'));
    const tia = await page.evaluate(async () => (await fetch('/api/v1/auth/whoami')).json());
    assert(tia.role === 'viewer' && tia.tenant === 'team-a', JSON.stringify(tia));

    assert(pageErrors.length === 0, `script errors: ${pageErrors.join('; ')}`);
    console.log('OpenID sign-in browser test: ok');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
