// The admin page (/ui) in a real browser: Debian's chromium driven by playwright-core, against
// the built worker under workerd (tests/support/gateway.mjs) and the fake Databricks. A person's
// path through it: sign in, create a key with the form, call the API with the secret the page
// showed, find the call in the logs and the charts, edit, block, regenerate and delete keys,
// read the models and their health, and sign in as the virtual key to see only its usage.
// Any console error, page error, failed request or unexpected error answer fails the test.
// Screenshots of every page, wide and narrow, go to build-test/screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startGateway, raw, userMessage, MASTER_KEY } from '../support/gateway.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHOTS = path.join(ROOT, 'build-test', 'screenshots');
const WIDE = { width: 1280, height: 860 };
const NARROW = { width: 375, height: 812 };
const MODEL = 'databricks-gpt-5-1';

/** Debian's chromium (`make test-ui` installs it), or CHROMIUM_PATH. */
function chromiumPath() {
  if (process.env.CHROMIUM_PATH) return process.env.CHROMIUM_PATH;
  for (const name of ['chromium', 'chromium-browser']) {
    try {
      return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
    } catch {}
  }
  throw new Error('chromium is not installed: `make test-ui` installs it (apt-get install -y chromium)');
}

let gw, browser, context, page;
/** Problems seen in the browser; `allowed` are error answers a step expects (method, path). */
const problems = [];
const allowed = [];
const allow = (method, pathname) => allowed.push({ method, pathname });
const isAllowed = (method, url) => allowed.some((a) => a.method === method && new URL(url).pathname === a.pathname);

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  gw = await startGateway();
  browser = await chromium.launch({ executablePath: chromiumPath(), headless: true });
  context = await browser.newContext({ viewport: WIDE });
  page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    // The browser reports each error answer as "Failed to load resource"; the answers are
    // checked below, by method and path.
    if (/^Failed to load resource/.test(msg.text())) return;
    problems.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && !isAllowed(r.request().method(), r.url())) {
      problems.push(`error answer: ${r.status()} ${r.request().method()} ${r.url()}`);
    }
  });
});

after(async () => {
  await browser?.close();
  await gw?.close();
});

const $ = (selector, options) => page.locator(selector, options);
const text = (selector) => $(selector).innerText();

/** Goes to a page of the app and waits for it to finish loading. */
async function open(id) {
  await page.evaluate((hash) => (location.hash = hash), `#/${id}`);
  await $(`section[data-page="${id}"]`).waitFor();
  await page.waitForFunction(() => !document.querySelector('.loading'));
}

/** Screenshots of the page as it is, wide and at 375 px, where it must not scroll sideways. */
async function shoot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}-wide.png`), fullPage: true });
  await page.setViewportSize(NARROW);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `${name} scrolls sideways by ${overflow} px at 375 px`);
  await page.screenshot({ path: path.join(SHOTS, `${name}-narrow.png`), fullPage: true });
  await page.setViewportSize(WIDE);
}

/** Fills the key form's fields (by field name) and submits it. */
async function submitKeyForm(fields) {
  const form = $('dialog[data-testid="key-form"]');
  await form.waitFor();
  for (const [name, value] of Object.entries(fields)) await form.locator(`[name="${name}"]`).fill(value);
  await form.locator('button[type="submit"]').click();
}

/** The secret the page shows under `title` (the newest one), once it shows it. */
async function shownSecret(title) {
  await $('.secret strong', { hasText: title }).waitFor();
  return text('[data-testid="secret"]');
}

async function signIn(key, role) {
  await $('section[data-page="signin"]').waitFor();
  await $('#signin-key').fill(key);
  await $(`input[name="role"][value="${role}"]`).check();
  await $('form button[type="submit"]').click();
}

const today = () => new Date().toISOString().slice(0, 10);
/** The UTC day the test's calls were made on (set when they are). */
let callDay;
const chartDay = async (testid) => Number(await $(`svg[data-testid="${testid}"] g.day[data-day="${callDay}"]`).getAttribute('data-value'));

test('the admin page, as the master key and as a virtual key', async () => {
  // /ui redirects to /ui/, which serves the page with a strict CSP; the static assets serve it
  // and nothing else (the worker's token table is not served).
  const redirect = await fetch(`${gw.url}/ui`, { redirect: 'manual' });
  assert.equal(redirect.status, 307);
  assert.equal(redirect.headers.get('location'), '/ui/');
  const served = await fetch(`${gw.url}/ui/`);
  assert.equal(served.status, 200);
  assert.match(served.headers.get('content-type'), /^text\/html/);
  assert.match(served.headers.get('content-security-policy'), /script-src 'self'/);
  assert.equal((await fetch(`${gw.url}/ui/nothing.js`)).status, 404);
  assert.equal((await fetch(`${gw.url}/cl100k_base.tokens`)).status, 404);
  assert.equal((await fetch(`${gw.url}/ui/%2e%2e/cl100k_base.tokens`)).status, 404);
  assert.equal((await fetch(`${gw.url}/_headers`)).status, 404);

  await page.goto(`${gw.url}/ui`);
  await shoot('signin');

  // A wrong key: the API's message, in words.
  allow('GET', '/key/list');
  await signIn('sk-not-a-key-123', 'master');
  await $('[role="alert"]').waitFor();
  assert.match(await text('[role="alert"]'), /Cannot sign in: Invalid API key/);
  allowed.pop();

  await signIn(MASTER_KEY, 'master');
  await $('section[data-page="keys"]').waitFor();
  assert.equal(await page.evaluate(() => document.cookie), '');
  assert.ok(!(await page.evaluate(() => JSON.stringify(localStorage)).then((s) => s.includes(MASTER_KEY))));

  // Create a key through the form, with settings of several kinds.
  await $('[data-testid="create-key"]').click();
  await page.waitForTimeout(100);
  await shoot('key-form');
  await submitKeyForm({ key_alias: 'ui-alice', max_budget: '2.5', rpm_limit: '20', tags: 'ui, test', metadata: '{"owner": "alice"}' });
  const secret = await shownSecret('Key ui-alice created');
  assert.match(secret, /^sk-/);
  await $('tr[data-alias="ui-alice"]').waitFor();
  await shoot('keys');
  const info = (await raw(gw, `/key/info?key=${secret}`, { method: 'GET' })).json.info;
  assert.deepEqual([info.key_alias, info.max_budget, info.rpm_limit, info.tags, info.metadata], ['ui-alice', 2.5, 20, ['ui', 'test'], { owner: 'alice' }]);

  // A bad field: the form stays open with the API's message.
  allow('POST', '/key/generate');
  await $('[data-testid="create-key"]').click();
  await submitKeyForm({ key_alias: 'ui-alice' });
  await $('dialog .form-error [role="alert"]').waitFor();
  assert.match(await text('dialog .form-error'), /`ui-alice` is already used by another key/);
  await $('dialog[data-testid="key-form"] button:has-text("Cancel")').click();
  allowed.pop();

  // A second key, so that the virtual key's view can be seen to leave it out.
  await $('[data-testid="create-key"]').click();
  await submitKeyForm({ key_alias: 'ui-bob' });
  const bob = await shownSecret('Key ui-bob created');

  // Calls with the secrets the page showed.
  const alice = gw.client({ apiKey: secret });
  const { data: answer, response } = await alice.chat.completions
    .create({ model: MODEL, messages: userMessage('hello from the admin page test') })
    .withResponse();
  assert.equal(answer.choices[0].message.content, 'Echo: hello from the admin page test');
  const cost = Number(response.headers.get('x-litellm-response-cost'));
  assert.ok(cost > 0);
  const bobCall = await gw.client({ apiKey: bob }).chat.completions.create({ model: MODEL, messages: userMessage('bob') }).withResponse();
  const bobAnswer = bobCall.data;
  callDay = today();
  const bobCost = Number(bobCall.response.headers.get('x-litellm-response-cost'));

  // The logs table has each call, with its key and model.
  await open('logs');
  const row = $(`tr[data-request-id="${answer.id}"]`);
  await row.waitFor();
  assert.match(await row.innerText(), /ui-alice[\s\S]*databricks-gpt-5-1[\s\S]*200/);
  await $(`tr[data-request-id="${bobAnswer.id}"]`).waitFor();
  await $('input[name="text"]').fill('ui-bob');
  assert.equal(await $('table[data-testid="logs"] tbody tr').count(), 1);
  await $('input[name="text"]').fill('');
  await shoot('logs');

  // The charts: today has both requests and their spend; by key, alice's row has hers. A
  // gateway without /global/spend/report yet: the page reads the spend logs instead, and says so.
  const reportMissing = (await raw(gw, `/global/spend/report?start_date=${today()}&end_date=${today()}`, { method: 'GET' })).status === 404;
  if (reportMissing) allow('GET', '/global/spend/report');
  // The report is fed in batches after settlement: the page is reloaded until it has both calls.
  const deadline = Date.now() + 15_000;
  for (;;) {
    await open('spend');
    if (Math.abs((await chartDay('spend-chart')) - (cost + bobCost)) < 1e-12 || Date.now() > deadline) break;
    await open('keys');
    await page.waitForTimeout(500);
  }
  assert.match(await text('section[data-page="spend"] .hint'), reportMissing ? /from the spend logs/ : /from \/global\/spend\/report/);
  assert.equal(await chartDay('requests-chart'), 2);
  const spendToday = await chartDay('spend-chart');
  assert.ok(Math.abs(spendToday - (cost + bobCost)) < 1e-12, `spend today ${spendToday}, the calls ${cost} and ${bobCost}`);
  assert.equal(await text('[data-testid="total-requests"]'), '2');
  const aliceRow = $('table[data-testid="spend-totals"] tr', { hasText: 'ui-alice' });
  assert.match(await aliceRow.innerText(), /ui-alice\s+\$\S+\s+1\s/);
  await shoot('spend');
  await $('button[data-dimension="model"]').click();
  assert.match(await $('table[data-testid="spend-totals"] tbody').innerText(), /databricks-gpt-5-1\s+\$\S+\s+2\s/);
  await $('button[data-dimension="team"]').click();
  assert.match(await $('table[data-testid="spend-totals"] tbody').innerText(), /^Unassigned Team\s+\$\S+\s+2\s/);

  // Edit, block and unblock through the table.
  await open('keys');
  await $('tr[data-alias="ui-alice"] button:has-text("Edit")').click();
  await submitKeyForm({ rpm_limit: '30' });
  await page.waitForFunction(() => document.querySelector('tr[data-alias="ui-alice"]')?.innerText.includes('30 rpm'));
  await $('tr[data-alias="ui-alice"] button:has-text("Block")').click();
  await $('tr[data-alias="ui-alice"] .badge:has-text("blocked")').waitFor();
  await assert.rejects(alice.chat.completions.create({ model: MODEL, messages: userMessage('x') }), /blocked/);
  await $('tr[data-alias="ui-alice"] button:has-text("Unblock")').click();
  await $('tr[data-alias="ui-alice"] .badge:has-text("active")').waitFor();

  // Regenerate: a new secret, the old one refused.
  await $('tr[data-alias="ui-alice"] button:has-text("Regenerate")').click();
  await shoot('confirm');
  await $('dialog button:has-text("Regenerate")').click();
  const regenerated = await shownSecret('New secret for ui-alice');
  assert.notEqual(regenerated, secret);
  assert.equal((await raw(gw, '/key/info', { method: 'GET', key: secret })).status, 401);
  assert.equal((await raw(gw, '/key/info', { method: 'GET', key: regenerated })).status, 200);

  // Delete, after confirming; cancelling first keeps the key.
  await $('tr[data-alias="ui-bob"] button:has-text("Delete")').click();
  await $('dialog button:has-text("Cancel")').click();
  await $('tr[data-alias="ui-bob"]').waitFor();
  await $('tr[data-alias="ui-bob"] button:has-text("Delete")').click();
  await $('dialog button:has-text("Delete")').click();
  await $('tr[data-alias="ui-bob"]').waitFor({ state: 'detached' });
  assert.equal((await raw(gw, '/key/info', { method: 'GET', key: bob })).status, 401);

  // Search and paging.
  await $('input[name="key_alias"]').fill('ui-alice');
  await $('form[role="search"] button[type="submit"]').click();
  await page.waitForFunction(() => document.querySelectorAll('table[data-testid="keys"] tbody tr').length === 1);
  assert.match(await text('.pager'), /Page 1 of 1 · 1 keys/);

  // Models, their state and health.
  await open('models');
  assert.ok((await $('table[data-testid="models"] tbody tr').count()) >= 5);
  await $('[data-testid="run-health"]').click();
  await page.waitForFunction(() => /healthy,/.test(document.querySelector('.health-slot')?.innerText || ''), null, { timeout: 60_000 });
  assert.match(await text('tr[data-deployment] >> nth=0'), /healthy · \d+ ms/);
  assert.match(await text('.health-slot'), /\d+ healthy, [1-9]\d* unhealthy deployments/);
  await shoot('models');

  // Teams, users, customers: a table, or a plain note while the gateway lacks the routes.
  const parties = [
    ['teams', 'team', { team_id: 'ui-team', team_alias: 'UI team', max_budget: 5 }],
    ['users', 'user', { user_id: 'ui-user', user_email: 'ui@example.com', max_budget: 5 }],
    ['customers', 'customer', { user_id: 'ui-customer', max_budget: 5 }],
  ];
  for (const [id, kind, record] of parties) {
    const route = `/${kind}/list`;
    const missing = (await raw(gw, route, { method: 'GET' })).status === 404;
    if (missing) allow('GET', route);
    else assert.equal((await raw(gw, `/${kind}/new`, { body: record })).status, 200);
    await open(id);
    if (missing) assert.match(await text(`section[data-page="${id}"]`), new RegExp(`does not serve ${route} yet`));
    else assert.match(await text(`section[data-page="${id}"] tr[data-id="${record.team_id || record.user_id}"]`), /\$5\.00\s+active/);
    await shoot(id);
  }

  // The virtual key sees its own usage only.
  await $('#who button:has-text("Sign out")').click();
  await signIn(regenerated, 'key');
  await $('section[data-page="usage"] [data-testid="key-info"]').waitFor();
  await page.waitForFunction(() => !document.querySelector('.loading'));
  assert.equal(await $('[data-testid="key-info"]').getAttribute('data-alias'), 'ui-alice');
  await $(`section[data-page="usage"] tr[data-request-id="${answer.id}"]`).waitFor();
  assert.equal(await $(`tr[data-request-id="${bobAnswer.id}"]`).count(), 0);
  assert.equal(await chartDay('requests-chart'), 1);
  assert.deepEqual(await page.evaluate(() => [...document.querySelectorAll('#nav a')].map((a) => a.textContent)), ['My usage', 'Logs', 'Models']);
  await shoot('usage');
  await open('logs');
  assert.equal(await $('table[data-testid="logs"] tbody tr').count(), 1);
  assert.equal(await $('input[name="api_key"]').count(), 0);

  // A key deleted meanwhile: the next page says why and asks to sign in again.
  assert.equal((await raw(gw, '/key/delete', { body: { keys: [regenerated] } })).status, 200);
  allow('GET', '/key/info');
  allow('GET', '/spend/logs');
  await page.evaluate(() => (location.hash = '#/usage'));
  await $('section[data-page="signin"] [role="alert"]').waitFor();
  assert.match(await text('section[data-page="signin"] [role="alert"]'), /^Signed out: .+/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  assert.deepEqual(problems, []);
});
