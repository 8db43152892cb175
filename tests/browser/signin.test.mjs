// Real-browser test of the web UI's sign-in with an API token, against a running
// `gpuwarden run` with `[auth] enabled = true` (the Rust test crates/gpuwarden/tests/
// auth_browser.rs starts it and passes the tokens):
//
//   node tests/browser/signin.test.mjs http://127.0.0.1:PORT OPERATOR_TOKEN
//
// Checks: the UI shows the sign-in form (no data) when the API answers 401; a wrong token
// is refused in the form; the right one signs in, the fleet page loads, and the session
// cookie is `gpw_session`, HttpOnly (not visible to scripts), Secure, SameSite=Strict and
// does not hold the token; a change made with the cookie but without the CSRF header is
// refused (403), the UI's own change carries it (past authentication: 404 for a made-up
// incident); the header shows who is signed in; "Sign out" returns to the form and ends
// the session. Exits 0 on success, 1 on failure.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const base = (process.argv[2] || '').replace(/\/$/, '');
const token = process.argv[3] || '';
if (!/^http:\/\/(127\.0\.0\.1|localhost):\d+$/.test(base) || !token.startsWith('gpw_')) {
  console.error('usage: node signin.test.mjs http://127.0.0.1:PORT gpw_TOKEN');
  process.exit(2);
}
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function step(name) {
  console.log(`  - ${name}`);
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

    step('without a session the UI shows the sign-in form, no data');
    await page.goto(`${base}/#/`);
    await page.waitForSelector('form.signin input#token');
    assert((await page.locator('.tile').count()) === 0, 'no GPU tiles before sign-in');

    step('a wrong token is refused in the form');
    await page.fill('#token', `gpw_${'C'.repeat(43)}`);
    await page.click('form.signin button[type=submit]');
    await page.waitForFunction(() => document.querySelector('form.signin')?.textContent.includes('not valid'));

    step('the right token signs in; the fleet page loads');
    await page.fill('#token', token);
    await page.click('form.signin button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('.tile').length > 0, null, { timeout: 45_000 });
    await page.waitForFunction(() => document.querySelector('.user')?.textContent.includes('operator'));

    step('the session cookie: HttpOnly, Secure, SameSite=Strict, not the token');
    // All cookies: filtering by an http:// URL would hide Secure ones.
    const cookies = await context.cookies();
    const c = cookies.find((k) => k.name === 'gpw_session');
    assert(c, `gpw_session cookie set: ${JSON.stringify(cookies)}`);
    assert(c.httpOnly && c.secure && c.sameSite === 'Strict' && c.path === '/', JSON.stringify(c));
    assert(!c.value.includes(token.slice(4)), 'the cookie is not the token');
    assert(!(await page.evaluate(() => document.cookie)).includes('gpw_session'), 'scripts cannot read it');

    step('a change with the cookie but without X-CSRF-Token is refused; the UI sends it');
    const bare = await page.evaluate(async () => {
      const r = await fetch('/api/v1/incidents/01JZZZZZZZZZZZZZZZZZZZZZZZ/ack', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      return r.status;
    });
    assert(bare === 403, `no CSRF header: 403, got ${bare}`);
    const viaUi = await page.evaluate(async () => {
      const { api } = await import('/ui/js/api.js');
      try {
        await api.ack('01JZZZZZZZZZZZZZZZZZZZZZZZ', 'browser test');
        return 200;
      } catch (e) {
        return e.status;
      }
    });
    assert(viaUi === 404, `the UI's ack gets past authentication and CSRF (404: no such incident), got ${viaUi}`);

    step('sign out: back to the form, the session is over');
    await page.click('.user button');
    await page.waitForSelector('form.signin input#token');
    const after = await page.evaluate(async () => (await fetch('/api/v1/gpus')).status);
    assert(after === 401, `after sign-out the API answers 401, got ${after}`);

    assert(pageErrors.length === 0, `script errors: ${pageErrors.join('; ')}`);
    console.log('sign-in browser test: ok');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
