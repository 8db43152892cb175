// Real-browser test: a GPU with an open critical security incident is not shown as
// healthy. Run by `crates/gpuwarden/tests/browser.rs` after it planted a miner on GPU
// UUID and waited for the critical mining incident (`cause.unauthorized_workload`):
//
//   node tests/browser/status.test.mjs http://127.0.0.1:9470 GPU-UUID
//
// Checks, in Debian's chromium through playwright-core: the GPU's tile on the fleet page
// is red "unhealthy" (state attribute, class, the word on the tile and its computed
// colour, which must differ from a healthy tile's), carries a "critical security" badge
// and names the incident; the GPU page's state badge says unhealthy and explains why,
// while its health panel still shows the measured health; the page throws no script
// error. Exits 0 on success, 1 on failure; a screenshot goes to
// target/browser-screenshots/ (or $GPUWARDEN_SCREENSHOTS).

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const base = (process.argv[2] || '').replace(/\/$/, '');
const uuid = process.argv[3] || '';
if (!/^http:\/\/(127\.0\.0\.1|localhost):\d+$/.test(base) || !uuid) {
  console.error('usage: node status.test.mjs http://127.0.0.1:PORT GPU-UUID');
  process.exit(2);
}
const here = path.dirname(fileURLToPath(import.meta.url));
const shots = process.env.GPUWARDEN_SCREENSHOTS || path.resolve(here, '../../target/browser-screenshots');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gpuwarden-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const pageErrors = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.setDefaultTimeout(30_000);

    console.log('--- fleet page: the mining GPU is not a healthy tile');
    await page.goto(`${base}/#/`);
    const tile = `.tile[data-uuid="${uuid}"]`;
    await page.waitForSelector(tile);
    const look = await page.$eval(tile, (t) => {
      // A healthy tile's colour, drawn the same way, to compare with.
      const probe = document.createElement('a');
      probe.className = 'tile state-healthy';
      document.body.appendChild(probe);
      const healthy = getComputedStyle(probe).backgroundColor;
      probe.remove();
      return {
        state: t.dataset.state,
        cls: t.className,
        word: t.querySelector('.state')?.textContent,
        badge: t.querySelector('.incident-badge')?.textContent ?? null,
        reason: t.querySelector('.reason')?.textContent ?? '',
        label: t.getAttribute('aria-label'),
        bg: getComputedStyle(t).backgroundColor,
        healthy,
      };
    });
    console.log(`    tile: ${JSON.stringify(look)}`);
    assert(look.state === 'unhealthy', `tile state unhealthy, got ${look.state}`);
    assert(look.cls.includes('state-unhealthy') && !look.cls.includes('state-healthy'), `tile class: ${look.cls}`);
    assert(look.word === 'unhealthy', `the tile says unhealthy, got ${look.word}`);
    assert(look.bg !== look.healthy, `tile colour ${look.bg} differs from a healthy tile's ${look.healthy}`);
    assert(/critical security/i.test(look.badge ?? ''), `critical security badge, got ${look.badge}`);
    assert(/security incident/.test(look.reason) && /T1496|mining/i.test(look.reason), `reason names the incident: ${look.reason}`);
    assert(!/: healthy/.test(look.label), `accessible label is not healthy: ${look.label}`);
    // The node it is on is listed with an unhealthy GPU, first among its tiles.
    const first = await page.$eval(`.node:has(${tile}) .tile`, (t) => t.dataset.uuid);
    assert(first === uuid, `the mining GPU is first (worst) on its node, got ${first}`);
    await page.screenshot({ path: path.join(shots, 'status-fleet.png'), fullPage: true });

    console.log('--- GPU page: state badge and the reason');
    await page.goto(`${base}/#/gpu/${encodeURIComponent(uuid)}`);
    await page.waitForSelector('#gpu-state');
    const badge = (await page.textContent('#gpu-state')).trim();
    assert(badge === 'unhealthy', `GPU page badge unhealthy, got ${badge}`);
    await page.waitForSelector('#gpu-status-reason');
    const why = await page.textContent('#gpu-status-reason');
    assert(/security incident/.test(why), `GPU page says why: ${why}`);
    await page.screenshot({ path: path.join(shots, 'status-gpu.png'), fullPage: true });

    assert(pageErrors.length === 0, `no script errors: ${pageErrors.join('; ')}`);
    console.log('OK');
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e.stack || e.message);
  process.exit(1);
});
