// tests/browser/monitor_tls.spec.js: the web monitor over HTTPS (gearmand
// -r http --ssl) in headless Chromium, for tests/browser/test_monitor_tls.py.
//
// Chromium is made to trust the test's server certificate with
// --ignore-certificate-errors-spki-list=HASH: the base64 SHA-256 of that
// certificate's public key, so exactly that key is accepted (any other
// certificate error, or another key, still fails).  Three launches:
//   untrusted  no flag: the page must not load (the certificate's CA is
//              unknown to Chromium)
//   wrong_pin  the flag with another key's hash: must not load either
//   trusted    the flag with the server's hash: the page loads, shows the
//              function GM_FUNCTION, and keeps refreshing over HTTPS
// It prints one JSON object on stdout: {steps: {name: {ok, data, error}}}.
//
// Environment:
//   GM_HTTPS         https://127.0.0.1:PORT of the server's HTTP port
//   GM_SPKI          the server key's hash; GM_WRONG_SPKI another key's
//   GM_FUNCTION      a function the page must list
//   GM_OUT_DIR       where the screenshot (monitor-tls.png) goes
//   PLAYWRIGHT_DIR   the folder whose node_modules holds playwright-core
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
'use strict';

const path = require('path');
const { createRequire } = require('module');

const base = process.env.GM_HTTPS;
const req = createRequire(path.join(process.env.PLAYWRIGHT_DIR || __dirname, 'node_modules', 'x.js'));
const { chromium } = req('playwright-core');

const out = { steps: {} };
const T = 8000;
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--no-proxy-server'];

function log(msg) { process.stderr.write('monitor_tls.spec: ' + msg + '\n'); }

async function step(name, fn) {
  const t0 = Date.now();
  try {
    out.steps[name] = { ok: true, data: await fn() };
  } catch (e) {
    out.steps[name] = { ok: false, error: String((e && e.stack) || e) };
  }
  log(name + (out.steps[name].ok ? ' done' : ' FAILED: ' + out.steps[name].error.split('\n')[0]) +
      ' (' + (Date.now() - t0) + ' ms)');
}

async function withBrowser(extra, fn) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ARGS.concat(extra),
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    return await fn(await context.newPage());
  } finally {
    await browser.close();
  }
}

// Loads the page; returns {loaded: false, error} when navigation fails.
async function tryLoad(page) {
  try {
    const resp = await page.goto(base + '/', { waitUntil: 'load', timeout: T });
    return { loaded: true, status: resp.status() };
  } catch (e) {
    return { loaded: false, error: String(e.message || e).split('\n')[0] };
  }
}

(async () => {
  await step('untrusted', () => withBrowser([], tryLoad));
  await step('wrong_pin', () => withBrowser(['--ignore-certificate-errors-spki-list=' + process.env.GM_WRONG_SPKI],
    tryLoad));
  await step('trusted', () => withBrowser(['--ignore-certificate-errors-spki-list=' + process.env.GM_SPKI],
    async (page) => {
      const console_ = [];
      const api = [];
      page.on('console', (m) => { if (m.type() === 'error') console_.push(m.text()); });
      page.on('pageerror', (e) => console_.push('pageerror: ' + e.message));
      page.on('response', (r) => { if (new URL(r.url()).pathname === '/api/status') api.push([r.url(), r.status()]); });
      const resp = await page.goto(base + '/?refresh=1#functions', { waitUntil: 'load', timeout: T });
      const fn = process.env.GM_FUNCTION;
      await page.waitForFunction((f) => Array.from(document.querySelectorAll(
        'table#functions tbody td[data-col=name]')).some((td) => td.textContent === f), fn, { timeout: T });
      // the page's own refreshes, over the same TLS: at least two answers
      const t0 = Date.now();
      while (api.length < 2 && Date.now() - t0 < T) await page.waitForTimeout(100);
      const row = await page.$$eval('table#functions tbody tr', (trs, f) => {
        for (const tr of trs) {
          const o = {};
          tr.querySelectorAll('td[data-col]').forEach((td) => { o[td.dataset.col] = td.textContent; });
          if (o.name === f) return o;
        }
        return null;
      }, fn);
      const shot = path.join(process.env.GM_OUT_DIR || '.', 'monitor-tls.png');
      await page.screenshot({ path: shot, fullPage: true });
      return {
        status: resp.status(),
        url: page.url(),
        secure: await page.evaluate(() => window.isSecureContext),
        protocol: await page.evaluate(() => location.protocol),
        health: await page.textContent('#health-badge'),
        row,
        api,
        console: console_,
        screenshot: shot,
      };
    }));
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: String((e && e.stack) || e) }) + '\n');
  process.exit(1);
});
