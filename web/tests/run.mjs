// Browser tests of the dropscope web page.
//
//   node web/tests/run.mjs <server url> <secret key> <output dir>
//
// Drives Debian's chromium (/usr/bin/chromium) with playwright-core against a
// server holding the demo data. Prints `ok - name` / `not ok - name: why` per
// test, then `N passed, M failed`; exits 1 if any failed. Screenshots go to
// the output dir. Nothing but the server under test may be contacted: every
// other request is aborted and fails the run.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [baseArg, KEY, OUT] = process.argv.slice(2);
if (!baseArg || !KEY || !OUT) {
  console.error('usage: node run.mjs <server url> <secret key> <output dir>');
  process.exit(2);
}
const BASE = baseArg.replace(/\/+$/, '');
const ORIGIN = new URL(BASE).origin;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DEMO = ['$pageview', 'signup_started', 'signup_completed', 'onboarding_done', 'first_purchase'];
const DEMO_SPEC = { steps: DEMO.map((event) => ({ event })), order: 'ordered', window: { value: 14, unit: 'day' }, date_from: 'all' };
fs.mkdirSync(OUT, { recursive: true });

// ------------------------------------------------------------ helpers
function assert(cond, msg) { if (!cond) throw new Error(msg); }
function eq(a, b, msg) { if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${msg}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`); }
const toNum = (t) => Number(String(t).replace(/[^0-9.\-]/g, ''));
async function api(pathname, body, key = KEY) {
  const init = { headers: { Authorization: `Bearer ${key}` } };
  if (body) { init.method = 'POST'; init.body = JSON.stringify(body); init.headers['Content-Type'] = 'application/json'; }
  const r = await fetch(BASE + pathname, init);
  return { status: r.status, body: await r.json().catch(() => null) };
}
async function q(spec) {
  const r = await api('/api/query', { query: spec });
  assert(r.status === 200, `API query failed (${r.status}): ${JSON.stringify(r.body)}`);
  return r.body;
}

const results = [];
let page;
async function shot(name, fullPage = true) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`), fullPage });
}
async function test(name, fn) {
  const t = Date.now();
  try {
    await fn();
    results.push(true);
    console.log(`ok - ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    results.push(false);
    console.log(`not ok - ${name}: ${e.message.split('\n')[0]}`);
    try { await shot(`FAILED-${results.length}`); } catch (_) { /* best effort */ }
  }
}
/** Waits until the main content has finished loading. */
async function settled() {
  await page.waitForSelector('#content .loading, #content .loading-overlay', { state: 'detached', timeout: 15000 });
}
async function tab(view) {
  await page.click(`#tabs button[data-view=${view}]`);
  await page.waitForSelector(`#tabs button[data-view=${view}].on`);
  await settled();
}

// ------------------------------------------------------------ browser
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dropscope-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1440, height: 900 },
  // The page's CSP forbids eval; playwright's helpers need it.
  bypassCSP: true,
});
const foreign = [];
await context.route('**/*', (route) => {
  const u = route.request().url();
  if (u.startsWith(ORIGIN + '/') || u.startsWith('data:')) return route.continue();
  foreign.push(u);
  return route.abort();
});
page = context.pages()[0] || await context.newPage();
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.setDefaultTimeout(15000);

try {
  await test('the page loads without a key and shows only the sign-in', async () => {
    const r = await page.goto(BASE + '/');
    eq(r.status(), 200, 'status of /');
    assert((r.headers()['content-type'] || '').startsWith('text/html'), 'content type of /');
    await page.waitForSelector('#signin-form', { state: 'visible' });
    assert(await page.isHidden('#app-view'), 'the app must be hidden before sign-in');
    for (const p of ['/api/events', '/api/person_events?id=user-1']) {
      const x = await api(p, undefined, '');
      eq(x.status, 401, `${p} without a key`);
    }
    await shot('01-signin');
  });

  await test('a wrong key shows the server\'s error', async () => {
    await page.fill('#signin-key', 'dss_wrong_key');
    await page.click('#signin-submit');
    await page.waitForSelector('#signin-error:not(.hidden)');
    const t = await page.textContent('#signin-error');
    assert(t.includes('invalid secret key'), `error text: ${t}`);
    assert(await page.isHidden('#app-view'), 'the app must stay hidden');
    await shot('02-wrong-key');
  });

  await test('sign in with the secret key', async () => {
    await page.fill('#signin-key', KEY);
    await page.click('#signin-submit');
    await page.waitForSelector('#app-view', { state: 'visible' });
    const stored = await page.evaluate(() => sessionStorage.getItem('dropscope.secret_key'));
    eq(stored, KEY, 'key kept in sessionStorage');
    await page.waitForFunction(() => document.querySelectorAll('#dl-events option').length > 10);
    const opts = await page.$$eval('#dl-events option', (o) => o.map((x) => x.value));
    for (const e of DEMO) assert(opts.includes(e), `autocomplete lacks ${e}`);
  });

  await test('build the demo funnel in the builder', async () => {
    const inputs = await page.$$('[data-testid=step-input]');
    for (let i = inputs.length - 1; i >= 1; i--) {
      await page.click(`[data-testid=step] >> nth=${i} >> button[title="Remove step"]`);
    }
    await page.fill('[data-testid=step-input] >> nth=0', DEMO[0]);
    for (let i = 1; i < DEMO.length; i++) {
      await page.click('#add-step');
      await page.fill(`[data-testid=step-input] >> nth=${i}`, DEMO[i]);
    }
    await page.selectOption('#date-preset', 'all');
    await page.click('#run');
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=bar-count]').length === n, DEMO.length);
    await settled();
    await shot('03-funnel');
  });

  let funnel;
  await test('the numbers on the bars equal the API\'s', async () => {
    funnel = await q({ kind: 'funnel', ...DEMO_SPEC });
    const shown = await page.$$eval('[data-testid=bar-count]', (els) => els.map((e) => [e.textContent, e.getAttribute('data-value')]));
    eq(shown.map((x) => toNum(x[0])), funnel.steps.map((s) => s.count), 'bar labels');
    eq(shown.map((x) => Number(x[1])), funnel.steps.map((s) => s.count), 'bar data-value');
    const pcts = await page.$$eval('[data-testid=bar-pct]', (els) => els.map((e) => e.textContent).filter((t) => !t.startsWith('→')));
    eq(pcts, funnel.steps.map((s) => (s.conversion_from_first * 100).toFixed(1) + '%'), 'bar percentages');
    const table = await page.$$eval('[data-testid=steps-table] tbody tr', (rows) => rows.map((r) => r.children[1].textContent));
    eq(table.map(toNum), funnel.steps.map((s) => s.count), 'steps table');
    const completed = await page.textContent('[data-testid=kpi-completed] .value');
    eq(toNum(completed), funnel.steps[DEMO.length - 1].count, 'completed KPI');
    assert(funnel.steps[0].count > 500, 'demo data is loaded');
  });

  await test('the funnel is in the URL (not the key) and a reload shows it fast', async () => {
    const url = page.url();
    assert(!url.includes(KEY), 'the URL must not contain the key');
    const state = JSON.parse(decodeURIComponent(new URL(url).hash.slice(1)));
    eq(state.q.steps.map((s) => s.event), DEMO, 'steps in the URL');
    const t0 = Date.now();
    await page.goto('about:blank');
    await page.goto(url);
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=bar-count]').length === n, DEMO.length);
    const ms = Date.now() - t0;
    console.log(`  # first funnel shown ${ms} ms after navigation`);
    assert(ms < 1000, `first funnel took ${ms} ms`);
    const vals = await page.$$eval('[data-testid=bar-count]', (els) => els.map((e) => Number(e.getAttribute('data-value'))));
    eq(vals, funnel.steps.map((s) => s.count), 'bars after reload');
  });

  await test('a shared link opens the same funnel after sign-in in a new tab', async () => {
    const other = await context.newPage();
    try {
      await other.goto(page.url());
      await other.waitForSelector('#signin-form', { state: 'visible' });
      await other.fill('#signin-key', KEY);
      await other.click('#signin-submit');
      await other.waitForFunction((n) => document.querySelectorAll('[data-testid=bar-count]').length === n, DEMO.length);
      const vals = await other.$$eval('[data-testid=bar-count]', (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      eq(vals, funnel.steps.map((s) => s.count), 'bars in the shared tab');
    } finally {
      await other.close();
    }
  });

  await test('persons behind a drop-off bar', async () => {
    await page.click('[data-testid=drop] >> nth=0');
    await page.waitForSelector('[data-testid=person]');
    const info = await page.textContent('#drawer-body .muted.small');
    const api1 = await q({ kind: 'funnel_persons', ...DEMO_SPEC, persons_for: { step: -2 }, limit: 1 });
    eq(toNum(info), api1.total, 'people who dropped before step 2');
    eq(api1.total, funnel.steps[1].dropped, 'dropped = persons total');
    const ids = await page.$$eval('[data-testid=person] .pid', (e) => e.map((x) => x.textContent));
    eq(ids.length, Math.min(50, api1.total), 'first page of persons');
    await shot('04-dropped-persons', false);
    await page.click('#drawer-close');
  });

  await test('breakdown by $browser shows each value with the API\'s numbers', async () => {
    await page.selectOption('#breakdown-type', 'event');
    await page.waitForSelector('[data-testid=breakdown-table]');
    await settled();
    const api1 = await q({ kind: 'funnel', ...DEMO_SPEC, breakdown: { type: 'event', property: '$browser' } });
    const rows = await page.$$eval('[data-testid=breakdown-table] tbody tr', (rs) => rs.map((r) => [...r.children].map((c) => c.textContent)));
    eq(rows.length, api1.breakdowns.length, 'breakdown rows');
    api1.breakdowns.forEach((b, i) => {
      assert(rows[i][0].includes(String(b.breakdown_value[0] ?? b.breakdown_value)), `row ${i} value`);
      eq(rows[i].slice(1, 1 + DEMO.length).map((t) => toNum(t.split(' ')[0])), b.steps.map((s) => s.count), `row ${i} counts`);
    });
    const edge = api1.breakdowns.find((b) => String(b.breakdown_value).includes('Edge'));
    assert(edge, 'Edge is a breakdown value');
    const total = funnel.steps[DEMO.length - 1].conversion_from_first;
    assert(edge.steps[DEMO.length - 1].conversion_from_first < total, 'Edge converts less than everyone');
    await shot('05-breakdown');
    await page.selectOption('#breakdown-type', '');
    await page.waitForSelector('[data-testid=breakdown-table]', { state: 'detached' });
  });

  await test('the correlation view finds the planted tutorial signal', async () => {
    await tab('correlation');
    await page.waitForSelector('[data-testid=corr-row][data-event=watched_tutorial]');
    const row = await page.$$eval('[data-testid=corr-row][data-event=watched_tutorial] td', (tds) => tds.map((t) => t.textContent));
    assert(row[1].includes('converts more'), `effect: ${row[1]}`);
    const or = parseFloat(row[4]);
    assert(or > 1.5, `odds ratio ${or}`);
    const qv = Number(row[7]);
    assert(qv < 0.05, `q ${qv}`);
    const api1 = await q({ kind: 'correlation', ...DEMO_SPEC, correlation: { type: 'events', top: 100 } });
    const r = api1.events.find((e) => e.event === 'watched_tutorial');
    eq(row[2].split('/')[0].trim(), String(r.success_count), 'success count');
    // sort by q, ascending
    await page.click('th[data-col=q_value]');
    await page.waitForSelector('th[data-col=q_value].sorted');
    const qs = await page.$$eval('[data-testid=corr-row]', (rs) => rs.map((r) => Number(r.children[7].textContent)));
    assert(qs.every((v, i) => i === 0 || qs[i - 1] <= v), `q column not sorted: ${qs.slice(0, 8)}`);
    await page.check('[data-testid=show-low]');
    await settled();
    const low = await page.$$('[data-testid=corr-row].dim');
    eq(low.length, api1.low_support.length, 'low-support rows shown and marked');
    await shot('06-correlation');
  });

  await test('a correlation row opens its persons and a person\'s timeline', async () => {
    await page.click('[data-testid=corr-row][data-event=watched_tutorial]');
    await page.waitForSelector('[data-testid=person]');
    const tabs = await page.textContent('[data-testid=persons-tabs]');
    const api1 = await q({ kind: 'correlation_persons', ...DEMO_SPEC, persons_for: { event: 'watched_tutorial', converted: true }, limit: 100 });
    assert(tabs.includes(`Converted (${api1.total})`), `tabs: ${tabs}`);
    const ids = await page.$$eval('[data-testid=person] .pid', (e) => e.map((x) => x.textContent));
    eq(ids, api1.persons.map((p) => p.id).slice(0, 50), 'persons listed');
    await shot('07-persons', false);
    await page.click('[data-testid=person] >> nth=0');
    await page.waitForSelector('[data-testid=tl-event]');
    const evs = await page.$$eval('[data-testid=tl-event] .tl-ev', (e) => e.map((x) => x.textContent));
    assert(evs.some((e) => e.startsWith('watched_tutorial')), 'timeline shows watched_tutorial');
    const tl = await api(`/api/person_events?id=${encodeURIComponent(ids[0])}&limit=1000`);
    eq(tl.status, 200, 'person_events status');
    eq(evs.length, tl.body.events.length, 'timeline length');
    eq(evs.map((e) => e.split(' ')[0]), tl.body.events.map((e) => e.event), 'timeline events');
    const steps = await page.$$('[data-testid=tl-event].tl-step');
    assert(steps.length >= DEMO.length, `funnel steps highlighted: ${steps.length}`);
    await shot('08-timeline', false);
    await page.click('#drawer-close');
  });

  await test('time to convert, trends and the conversion curve are drawn from the API', async () => {
    await tab('ttc');
    const ttc = await q({ kind: 'time_to_convert', ...DEMO_SPEC, from_step: 0, to_step: DEMO.length - 1 });
    const bars = await page.$$('[data-testid=ttc-bar]');
    eq(bars.length, ttc.bins.length - 1, 'histogram bars');
    await shot('09-time-to-convert');
    await tab('trends');
    await page.waitForSelector('[data-testid=trends-chart] path.line');
    const tr = await q({ kind: 'funnel_trends', ...DEMO_SPEC, interval: 'week' });
    const dots = await page.$$('[data-testid=trends-chart] circle');
    eq(dots.length, tr.rows.length, 'trend points');
    await page.click('[data-testid=interval] button[data-value=day]');
    await settled();
    const dots2 = await page.$$('[data-testid=trends-chart] circle, [data-testid=trends-chart] path.line');
    assert(dots2.length > 0, 'daily trend drawn');
    await shot('10-trends');
    await tab('funnel');
    await page.waitForSelector('[data-testid=curve-chart] path.line');
  });

  await test('paths after the largest drop', async () => {
    await tab('paths');
    await page.waitForSelector('[data-testid=path-row]');
    const p = await q({ kind: 'paths', ...DEMO_SPEC, paths: { depth: 3, top: 10 } });
    const text = await page.textContent('[data-testid=paths-view]');
    assert(text.includes(`${p.dropped.toLocaleString('en-US')} people dropped`), 'dropped count in the headline');
    assert(text.includes(p.dropped_next[0].path[0]), 'top next event of drop-offs');
    await shot('11-paths');
  });

  await test('the diagnosis names the planted causes', async () => {
    await tab('diagnosis');
    await page.waitForSelector('[data-testid=diagnosis-view]');
    const drivers = await page.$$eval('[data-testid=driver]', (e) => e.map((x) => x.textContent));
    assert(drivers.some((d) => d.includes('watched_tutorial') && d.includes('odds of completing')), 'watched_tutorial driver');
    const segs = await page.$$eval('[data-testid=segment]', (e) => e.map((x) => x.textContent));
    assert(segs.some((d) => d.includes('Edge') && d.includes('lower')), `Edge segment: ${segs}`);
    await shot('12-diagnosis');
  });

  await test('a failed query shows the server\'s message', async () => {
    await tab('funnel');
    await page.click('#add-exclusion');
    await page.fill('.exclusion input', 'logout');
    await page.selectOption('.exclusion select[aria-label=from_step]', '1');
    await page.selectOption('.exclusion select[aria-label=to_step]', '1');
    await page.click('#run');
    await page.waitForSelector('[data-testid=error]');
    const t = await page.textContent('[data-testid=error]');
    assert(t.includes('invalid query') && t.includes('exclusions[0]'), `error: ${t}`);
    await shot('13-error');
    await page.click('.exclusion button[title="Remove exclusion"]');
    await page.waitForSelector('[data-testid=bar-count]');
  });

  await test('sign out forgets the key', async () => {
    await page.click('#signout');
    await page.waitForSelector('#signin-form', { state: 'visible' });
    const stored = await page.evaluate(() => sessionStorage.getItem('dropscope.secret_key') || localStorage.getItem('dropscope.secret_key'));
    eq(stored, null, 'stored key');
  });

  await test('nothing was fetched from another origin and no script error', async () => {
    eq(foreign, [], 'requests to other origins');
    eq(pageErrors, [], 'page errors');
  });
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}

const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`screenshots: ${OUT}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
