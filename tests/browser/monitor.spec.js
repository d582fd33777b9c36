// tests/browser/monitor.spec.js: drives the web monitor page in headless
// Chromium with playwright-core, for tests/browser/test_monitor.py.
//
// The Python test creates the server's state and decides what is right; this
// script only acts on the page and records what the page shows after each
// action.  It prints one JSON object on stdout: {steps: {name: {ok, data,
// error}}, console: [...], foreign_requests: [...], paths: {"GET /api/status": n},
// dialogs: [...]}; a step that throws is
// recorded with ok=false and the script goes on with the next one.
//
// Environment:
//   GM_HTTP          base URL of the server's HTTP port (http://127.0.0.1:N)
//   GM_PLAN          JSON: {cancel_handle, cancel_function, running_handle, link_function,
//                    late_function, proto_functions, retry_handle, discard_handle, dead_function}
//   GM_OUT_DIR       where screenshots go
//   PLAYWRIGHT_DIR   the folder whose node_modules holds playwright-core
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
'use strict';

const path = require('path');
const { createRequire } = require('module');

const base = process.env.GM_HTTP;
const plan = JSON.parse(process.env.GM_PLAN || '{}');
const outDir = process.env.GM_OUT_DIR || '.';
const req = createRequire(path.join(process.env.PLAYWRIGHT_DIR || __dirname, 'node_modules', 'x.js'));
const { chromium } = req('playwright-core');

const out = { steps: {}, console: [], foreign_requests: [], paths: {}, dialogs: [] };
const T = 5000; // a wait for the page, in ms (the page polls every second here)

function log(msg) { process.stderr.write('monitor.spec: ' + msg + '\n'); }

async function step(name, fn) {
  const t0 = Date.now();
  try {
    out.steps[name] = { ok: true, data: await fn() };
  } catch (e) {
    out.steps[name] = { ok: false, error: String((e && e.stack) || e) };
  }
  out.steps[name].ms = Date.now() - t0;
  log(name + (out.steps[name].ok ? ' done' : ' FAILED: ' + out.steps[name].error.split('\n')[0]) +
      ' (' + out.steps[name].ms + ' ms)');
}

// Rows of a table as objects keyed by the cells' data-col, plus the row class.
async function rows(page, table) {
  return page.$$eval('table#' + table + ' tbody tr', (trs) => trs
    .filter((tr) => tr.querySelector('td[data-col]'))
    .map((tr) => {
      const o = { _class: tr.className };
      tr.querySelectorAll('td[data-col]').forEach((td) => {
        o[td.dataset.col] = td.textContent;
        if (td.dataset.value !== undefined) o[td.dataset.col + '_value'] = td.dataset.value;
      });
      const b = tr.querySelector('button[data-action=cancel]');
      if (b) o._cancel_handle = b.dataset.handle;
      const r = tr.querySelector('button[data-action=retry]');
      if (r) o._retry = r.dataset.handle;
      const d = tr.querySelector('button[data-action=discard]');
      if (d) o._discard = d.dataset.handle;
      return o;
    }));
}
const names = async (page) => (await rows(page, 'functions')).map((r) => r.name);
const sortState = (page, table) => page.$$eval('table#' + table + ' th[aria-sort]',
  (ths) => ths.map((th) => th.dataset.sort + ':' + th.getAttribute('aria-sort')));
const txt = (page, sel) => page.textContent(sel);

async function waitJobsShown(page, predicate, arg) {
  await page.waitForFunction(predicate, arg, { timeout: T });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--no-proxy-server'],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') out.console.push(m.type() + ': ' + m.text()); });
  page.on('pageerror', (e) => out.console.push('pageerror: ' + e.message));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(base + '/')) { out.foreign_requests.push(u); return; }
    const p = r.method() + ' ' + new URL(u).pathname;
    out.paths[p] = (out.paths[p] || 0) + 1;
  });
  let dialogAnswer = 'dismiss';
  page.on('dialog', async (d) => {
    out.dialogs.push({ type: d.type(), message: d.message(), answer: dialogAnswer });
    if (dialogAnswer === 'accept') await d.accept(); else await d.dismiss();
  });

  await step('load', async () => {
    const resp = await page.goto(base + '/?refresh=1#functions', { waitUntil: 'load' });
    await page.waitForSelector('table#functions tbody td[data-col=name]', { timeout: T });
    return {
      status: resp.status(),
      content_type: resp.headers()['content-type'],
      title: await page.title(),
      version: await txt(page, '#srv-version'),
      pid: await txt(page, '#srv-pid'),
      threads: await txt(page, '#srv-threads'),
      connections: await txt(page, '#srv-connections'),
      uptime: await txt(page, '#srv-uptime'),
      queue: await txt(page, '#srv-queue'),
      health: await txt(page, '#health-badge'),
      total_jobs: await txt(page, '#total-jobs'),
      total_queued: await txt(page, '#total-queued'),
      total_running: await txt(page, '#total-running'),
      total_workers: await txt(page, '#total-workers'),
      total_functions: await txt(page, '#total-functions'),
      count_functions: await txt(page, '#count-functions'),
      count_workers: await txt(page, '#count-workers'),
      total_completed: await txt(page, '#total-completed'),
      total_failed: await txt(page, '#total-failed'),
      total_submitted: await txt(page, '#total-submitted'),
      refresh_period: await txt(page, '#refresh-period'),
      xss: await page.evaluate(() => window.__xss === undefined ? null : window.__xss),
      injected_elements: await page.$$eval('table#functions tbody img, table#functions tbody b', (e) => e.length),
    };
  });

  await step('functions', async () => rows(page, 'functions'));

  await step('sort', async () => {
    const r = {};
    await page.click('th[data-sort=queued]');
    r.queued_first = { names: await names(page), sort: await sortState(page, 'functions') };
    await page.click('th[data-sort=queued]');
    r.queued_second = { names: await names(page), sort: await sortState(page, 'functions') };
    await page.click('th[data-sort=workers]');
    r.workers_first = { rows: (await rows(page, 'functions')).map((x) => [x.name, x.workers]) };
    await page.click('th[data-sort=name]');
    r.name_first = { names: await names(page), sort: await sortState(page, 'functions') };
    await page.click('th[data-sort=name]');
    r.name_second = { names: await names(page), sort: await sortState(page, 'functions') };
    // the order survives a refresh (the page polls every second here)
    await page.waitForTimeout(1300);
    r.name_second_after_refresh = await names(page);
    await page.click('th[data-sort=name]');
    return r;
  });

  await step('filter', async () => {
    const r = {};
    await page.fill('#function-filter', 'resize');
    r.resize = await names(page);
    await page.fill('#function-filter', 'RE');
    r.re = await names(page);
    r.shown_label = await txt(page, '#function-shown');
    await page.waitForTimeout(1300);
    r.re_after_refresh = await names(page);
    await page.fill('#function-filter', 'no-such-function');
    r.none = await names(page);
    r.none_message = (await txt(page, 'table#functions tbody')).trim();
    await page.fill('#function-filter', '');
    r.cleared = await names(page);
    return r;
  });

  await step('workers', async () => {
    await page.click('#tab-workers');
    await page.waitForSelector('table#workers tbody td[data-col=client_id]', { state: 'visible', timeout: T });
    const r = { all: await rows(page, 'workers'), visible_panel: await page.isVisible('#panel-workers') };
    await page.fill('#worker-filter', 'report.build');
    r.filtered = (await rows(page, 'workers')).map((x) => x.client_id);
    await page.fill('#worker-filter', '');
    await page.click('th[data-sort=client_id]');
    r.sorted = (await rows(page, 'workers')).map((x) => x.client_id);
    return r;
  });

  await step('jobs_paging', async () => {
    await page.click('#tab-jobs');
    await page.waitForSelector('table#jobs tbody td[data-col=handle]', { state: 'visible', timeout: T });
    const r = {};
    const page1 = await rows(page, 'jobs');
    r.page1 = { total: await txt(page, '#job-total'), info: await txt(page, '#page-info'),
                handles: page1.map((x) => x.handle), first: page1[0],
                prev_disabled: await page.isDisabled('#prev-page'), next_disabled: await page.isDisabled('#next-page') };
    const firstHandle = r.page1.handles[0];
    await page.click('#next-page');
    await waitJobsShown(page, (h) => {
      const td = document.querySelector('table#jobs tbody td[data-col=handle]');
      return td && td.textContent !== h;
    }, firstHandle);
    r.page2 = { total: await txt(page, '#job-total'), info: await txt(page, '#page-info'),
                handles: (await rows(page, 'jobs')).map((x) => x.handle),
                prev_disabled: await page.isDisabled('#prev-page'), next_disabled: await page.isDisabled('#next-page') };
    await page.click('#prev-page');
    await waitJobsShown(page, (h) => {
      const td = document.querySelector('table#jobs tbody td[data-col=handle]');
      return td && td.textContent === h;
    }, firstHandle);
    r.back = { info: await txt(page, '#page-info'), handles: (await rows(page, 'jobs')).map((x) => x.handle) };
    return r;
  });

  await step('jobs_filter', async () => {
    const r = {};
    await page.selectOption('#job-state', 'running');
    await waitJobsShown(page, () => document.querySelector('#job-total').textContent === '1');
    r.running = await rows(page, 'jobs');
    await page.selectOption('#job-state', '');
    await page.selectOption('#job-function', plan.cancel_function);
    await waitJobsShown(page, (fn) => {
      const tds = [...document.querySelectorAll('table#jobs tbody td[data-col=function]')];
      return tds.length && tds.every((td) => td.textContent === fn);
    }, plan.cancel_function);
    r.function_rows = await rows(page, 'jobs');
    r.function_total = await txt(page, '#job-total');
    return r;
  });

  await step('cancel_dismissed', async () => {
    dialogAnswer = 'dismiss';
    const n = out.dialogs.length;
    await page.click(`button[data-action=cancel][data-handle="${plan.cancel_handle}"]`);
    await page.waitForTimeout(1200); // more than one refresh: the job must still be listed
    return { dialogs: out.dialogs.slice(n), handles: (await rows(page, 'jobs')).map((x) => x.handle),
             total: await txt(page, '#job-total') };
  });

  await step('cancel_accepted', async () => {
    dialogAnswer = 'accept';
    const n = out.dialogs.length;
    await page.click(`button[data-action=cancel][data-handle="${plan.cancel_handle}"]`);
    await page.waitForSelector(`button[data-action=cancel][data-handle="${plan.cancel_handle}"]`,
                               { state: 'detached', timeout: T });
    return { dialogs: out.dialogs.slice(n), handles: (await rows(page, 'jobs')).map((x) => x.handle),
             total: await txt(page, '#job-total'), toast: await txt(page, '#toast') };
  });

  await step('cancel_running', async () => {
    // a running job: the worker finishes it (the result is dropped), so the
    // server may go on listing it; the page must not offer a second cancel
    dialogAnswer = 'accept';
    await page.selectOption('#job-function', '');
    await page.selectOption('#job-state', 'running');
    const sel = `button[data-action=cancel][data-handle="${plan.running_handle}"]`;
    await page.click(sel);
    await page.waitForFunction((s) => {
      const b = document.querySelector(s);
      return !b || b.disabled;
    }, sel, { timeout: T });
    await page.waitForTimeout(1100);
    const r = { rows: await rows(page, 'jobs'), button: await page.$$eval(sel, (bs) => bs.map((b) => b.disabled)) };
    await page.selectOption('#job-state', '');
    return r;
  });

  await step('function_link', async () => {
    // a function name in the functions table opens its jobs
    await page.selectOption('#job-function', '');
    await page.click('#tab-functions');
    await page.click(`table#functions a[data-fn="${plan.link_function}"]`);
    await waitJobsShown(page, (fn) => {
      const tds = [...document.querySelectorAll('table#jobs tbody td[data-col=function]')];
      return tds.length && tds.every((td) => td.textContent === fn) && !document.querySelector('#panel-jobs').hidden;
    }, plan.link_function);
    const r = { selected: await page.inputValue('#job-function'), total: await txt(page, '#job-total'),
                hash: await page.evaluate(() => location.hash) };
    await page.selectOption('#job-function', '');
    return r;
  });

  await step('auto_refresh', async () => {
    await page.click('#tab-functions');
    const before = await names(page);
    const t0 = Date.now();
    const resp = await fetch(base + '/' + encodeURIComponent(plan.late_function), {
      method: 'POST', body: 'late', headers: { 'X-Gearman-Background': 'true', 'X-Gearman-Unique': 'late-1' },
    });
    await page.waitForSelector(`table#functions td[data-col=name] >> text="${plan.late_function}"`, { timeout: T });
    const seen_ms = Date.now() - t0;
    await page.waitForTimeout(1100); // one more sample for the charts
    return {
      submit_status: resp.status, before, after: await names(page), seen_ms,
      total_jobs: await txt(page, '#total-jobs'),
      rate_in: await txt(page, '#rate-in'), rate_out: await txt(page, '#rate-out'),
      spark_points: await page.$$eval('svg.spark polyline',
        (ls) => ls.map((l) => (l.getAttribute('points') || '').split(' ').filter(Boolean).length)),
      last_update: await txt(page, '#last-update'),
    };
  });

  await step('prototype_names', async () => {
    // functions named like Object.prototype's properties, made the way a
    // stranger could (a job submitted over HTTP), must be rows like any other
    await page.click('#tab-functions');
    const statuses = [];
    for (const fn of plan.proto_functions) {
      const resp = await fetch(base + '/' + encodeURIComponent(fn), {
        method: 'POST', body: 'p', headers: { 'X-Gearman-Background': 'true', 'X-Gearman-Unique': 'proto-1' },
      });
      statuses.push(resp.status);
    }
    const shownAll = (fns) => {
      const shown = new Set([...document.querySelectorAll('table#functions td[data-col=name]')].map((td) => td.textContent));
      return fns.every((f) => shown.has(f));
    };
    await page.waitForFunction(shownAll, plan.proto_functions, { timeout: T });
    await page.waitForTimeout(2200); // two more refreshes: the rows stay, nothing breaks
    return {
      statuses, names: await names(page), rows: await rows(page, 'functions'),
      still_shown: await page.evaluate(shownAll, plan.proto_functions),
      banner_hidden: await page.isHidden('#banner'),
      last_update: await txt(page, '#last-update'),
    };
  });

  await step('dead_tab', async () => {
    const before = out.paths['GET /api/dead'] || 0;
    await page.click('#tab-dead');
    await page.waitForSelector('table#dead tbody td[data-col=handle]', { state: 'visible', timeout: T });
    return { dead_requests_before: before, rows: await rows(page, 'dead'), count: await txt(page, '#count-dead'),
             shown: await txt(page, '#dead-shown') };
  });

  await step('dead_retry', async () => {
    const sel = `button[data-action=retry][data-handle="${plan.retry_handle}"]`;
    await page.click(sel);
    await page.waitForSelector(sel, { state: 'detached', timeout: T });
    return { rows: await rows(page, 'dead'), toast: await txt(page, '#toast') };
  });

  await step('dead_discard', async () => {
    dialogAnswer = 'accept';
    const n = out.dialogs.length;
    const sel = `button[data-action=discard][data-handle="${plan.discard_handle}"]`;
    await page.click(sel);
    await page.waitForSelector(sel, { state: 'detached', timeout: T });
    await page.waitForFunction(() => document.querySelector('#count-dead').textContent === '1', null, { timeout: T });
    return { dialogs: out.dialogs.slice(n), rows: await rows(page, 'dead'), count: await txt(page, '#count-dead') };
  });

  await step('pause_function', async () => {
    await page.click('#tab-functions');
    const fn = plan.dead_function;
    const row = async () => (await rows(page, 'functions')).find((x) => x.name === fn);
    const policies = async () => (await (await fetch(base + '/api/policies')).json()).find((p) => p.function === fn);
    const r = {};
    let x = await row();
    r.policy_before = x.policy; r.button_before = x.action;
    r.others = [...new Set((await rows(page, 'functions')).filter((y) => y.name !== fn).map((y) => y.policy))];
    await page.click(`button[data-action=pause][data-fn="${fn}"]`);
    await page.waitForSelector(`button[data-action=resume][data-fn="${fn}"]`, { timeout: T });
    x = await row();
    r.policy_paused = x.policy; r.button_paused = x.action;
    r.server_paused = (await policies()).paused;
    await page.click(`button[data-action=resume][data-fn="${fn}"]`);
    await page.waitForSelector(`button[data-action=pause][data-fn="${fn}"]`, { timeout: T });
    x = await row();
    r.policy_after = x.policy; r.button_after = x.action;
    r.server_resumed = (await policies()).paused;
    return r;
  });

  await step('screenshot', async () => {
    await page.click('#tab-workers');
    await page.screenshot({ path: path.join(outDir, 'monitor-workers.png'), fullPage: true });
    await page.click('#tab-jobs');
    await page.waitForSelector('table#jobs tbody td[data-col=handle]', { timeout: T });
    await page.screenshot({ path: path.join(outDir, 'monitor-jobs.png'), fullPage: true });
    await page.click('#tab-functions');
    await page.mouse.move(0, 0);
    await page.evaluate(() => { document.getElementById('toast').hidden = true; });
    const file = path.join(outDir, 'monitor.png');
    await page.screenshot({ path: file, fullPage: true });
    return { file };
  });

  await browser.close();
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  out.fatal = String((e && e.stack) || e);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(1);
});
