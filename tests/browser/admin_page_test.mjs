// Loads /_/admin in a real headless Chromium and checks what an operator would look at:
// every member in the table and alive, one tick path per node on the SVG ring, hover
// owners, a key lookup (position, preference list, versions), live refresh, and no
// script error. Run by admin_page_test.sh, which starts the cluster and writes the keys.
//
//   node admin_page_test.mjs --url http://127.0.0.1:PORT/_/admin --members 5 \
//     --key photos/cat.jpg --version <version from the PUT> --screenshot out.png
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    out[a.slice(2)] = argv[++i];
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const url = args.url;
const expectMembers = Number(args.members || 5);
const key = args.key;
const expectVersion = args.version || '';
const screenshot = args.screenshot;
const chromiumPath = args.chromium || process.env.CHROMIUM || '/usr/bin/chromium';
if (!url || !key || !screenshot) {
  console.error('usage: admin_page_test.mjs --url URL --key KEY --screenshot PNG [--members N] [--version V]');
  process.exit(2);
}
const origin = new URL(url).origin;

const failures = [];
const errors = [];
const foreign = [];
let statusFetches = 0;
const t0 = Date.now();
const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
function check(ok, what) {
  if (ok) log(`ok: ${what}`);
  else { log(`FAIL: ${what}`); failures.push(what); }
}

const profile = mkdtempSync(join(tmpdir(), 'ringstore-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
    deviceScaleFactor: 1,
    timeout: 30000,
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'assert') errors.push(`console.${msg.type()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => errors.push(`page error: ${err.stack || err.message || err}`));
  page.on('request', (req) => {
    const u = req.url();
    if (u.startsWith('data:')) return;
    if (!u.startsWith(origin + '/')) foreign.push(u);
    if (u.startsWith(origin + '/_/status')) statusFetches++;
  });
  page.on('response', (res) => {
    if (res.status() >= 400) errors.push(`HTTP ${res.status()} for ${res.url()}`);
  });

  log(`chromium ${context.browser()?.version() ?? ''} → ${url}`);
  await page.goto(url, { waitUntil: 'load' });

  // Members: one row per member, every one alive.
  await page.waitForFunction((n) => {
    const rows = document.querySelectorAll('#members-body tr[data-id]');
    return rows.length === n && [...rows].every((r) => r.dataset.alive === 'true');
  }, expectMembers, { timeout: 25000 }).catch(() => {});
  const rows = await page.$$eval('#members-body tr[data-id]', (trs) => trs.map((tr) => ({
    id: tr.dataset.id, alive: tr.dataset.alive, state: tr.dataset.state, text: tr.innerText,
  })));
  check(rows.length === expectMembers, `members table has ${expectMembers} rows (got ${rows.length})`);
  check(rows.every((r) => r.alive === 'true'), 'every member is shown alive');
  check(rows.every((r) => /^[0-9a-f]{32}$/.test(r.id) && r.text.includes(r.id.slice(0, 8))), 'every row shows its node id');
  check(rows.every((r) => /127\.0\.0\.1:\d+/.test(r.text)), 'every row shows its address');
  check(rows.filter((r) => /this node/i.test(r.text)).length === 1, 'exactly one row is marked as this node');

  // The ring: one tick path per node, one segment per vnode token.
  await page.waitForFunction((n) => document.querySelectorAll('#ring-ticks path.ticks').length === n,
    expectMembers, { timeout: 20000 }).catch(() => {});
  const ticks = await page.$$eval('#ring-ticks path.ticks', (ps) => ps.map((p) => ({
    node: p.dataset.node, segments: (p.getAttribute('d').match(/M/g) || []).length, stroke: p.getAttribute('stroke'),
  })));
  const status = await page.evaluate(async () => (await fetch('/_/status', { cache: 'no-store' })).json());
  check(ticks.length === expectMembers, `SVG ring has tick paths for ${expectMembers} nodes (got ${ticks.length})`);
  check(new Set(ticks.map((t) => t.node)).size === ticks.length && ticks.every((t) => rows.some((r) => r.id === t.node)),
    'each tick path belongs to a distinct member');
  check(ticks.every((t) => t.segments === (status.members.find((m) => m.id === t.node) || {}).vnodes),
    `each node has one tick per vnode (${ticks.map((t) => t.segments).join(', ')})`);
  check(new Set(ticks.map((t) => t.stroke)).size === ticks.length, 'nodes have distinct colours');

  // The page's SHA-1 fallback agrees with Web Crypto.
  const sha = await page.evaluate(async () => {
    const out = [];
    for (const s of ['', 'abc', '0123456789abcdef0123456789abcdef:4095', 'x'.repeat(119)]) {
      out.push([window.ringstoreAdmin.sha1Prefix64Js(s), await window.ringstoreAdmin.sha1Prefix64WebCrypto(s)]);
    }
    return out;
  });
  check(sha.every(([js, wc]) => wc === null || js === wc), 'pure-JS SHA-1 matches Web Crypto');
  check(sha[1][0] === '12220867466687316330', 'pure-JS SHA-1("abc") starts a9993e364706816a');

  // Hovering the ring shows the owners of the range under the pointer.
  const box = await page.locator('#ring').boundingBox();
  const scale = box.width / 440;
  await page.mouse.move(box.x + 220 * scale + 168 * scale * Math.sin(1), box.y + 220 * scale - 168 * scale * Math.cos(1));
  const tip = await page.waitForSelector('#ring-tip:not([hidden])', { timeout: 5000 }).then((e) => e.innerText()).catch(() => '');
  const tipOwners = await page.$$eval('#ring-tip li', (lis) => lis.length);
  check(/owners/i.test(tip) && tipOwners === status.n, `hover tooltip lists ${status.n} owners (got ${tipOwners})`);
  const dimmed = await page.$$eval('#ring-ticks path.dim', (ps) => ps.length);
  check(dimmed === expectMembers - status.n, `hover dims the ${expectMembers - status.n} non-owners (got ${dimmed})`);
  await page.mouse.move(5, 5);

  // Key lookup: position, preference list of N, the version on each replica.
  await page.fill('#lookup-key', key);
  await page.press('#lookup-key', 'Enter');
  await page.waitForSelector('#lookup-replicas tbody tr', { timeout: 10000 }).catch(() => {});
  const lookup = await page.evaluate(() => ({
    position: document.getElementById('lookup-position')?.textContent || '',
    rows: [...document.querySelectorAll('#lookup-replicas tbody tr')].map((tr) => ({
      id: tr.dataset.id, version: tr.dataset.version, rank: tr.cells[0].textContent, text: tr.innerText,
    })),
    marker: document.querySelectorAll('#ring-key .key-marker').length,
  }));
  const locate = await page.evaluate(async (k) => (await fetch('/_/locate?key=' + encodeURIComponent(k))).json(), key);
  const pref = lookup.rows.filter((r) => r.rank !== 'extra');
  check(lookup.position === locate.position && /^\d+$/.test(lookup.position), `lookup shows the position (${lookup.position})`);
  check(pref.length === status.n, `preference list has ${status.n} entries (got ${pref.length})`);
  check(pref.map((r) => r.id).join() === locate.preference_list.map((p) => p.id).join(), 'preference list matches /_/locate, in order');
  check(pref.every((r) => r.version && (!expectVersion || r.version === expectVersion)),
    `every replica shows the version written${expectVersion ? ` (${expectVersion})` : ''}`);
  check(pref.every((r) => /latest/i.test(r.text)), 'every replica is marked latest');
  check(lookup.marker === 1, 'the key is marked on the ring');
  const owners = await page.evaluate((p) => window.ringstoreAdmin.ownersAt(p), locate.position);
  check(owners && owners.join() === locate.preference_list.map((p) => p.id).join(),
    'the page\'s own ring gives the same owners as the node');

  // Live updates: the page polls /_/status again.
  const before = statusFetches;
  await page.waitForFunction(() => document.getElementById('conn').classList.contains('ok'), null, { timeout: 5000 }).catch(() => {});
  await page.waitForTimeout(2300);
  check(statusFetches > before, `the page refreshes from /_/status (${statusFetches} fetches so far)`);
  const conn = await page.textContent('#conn-text');
  check(/^live/.test(conn || ''), `the connection indicator reads live ("${conn}")`);

  check(foreign.length === 0, `no request leaves the node${foreign.length ? ': ' + foreign.join(', ') : ''}`);

  // A hover in the screenshot shows the owners tooltip as an operator sees it.
  await page.mouse.move(box.x + 220 * scale + 150 * scale * Math.sin(2.2), box.y + 220 * scale - 150 * scale * Math.cos(2.2));
  await page.waitForSelector('#ring-tip:not([hidden])', { timeout: 5000 }).catch(() => {});
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot: ${screenshot}`);
} catch (e) {
  failures.push(`exception: ${e.stack || e}`);
  log(`FAIL: ${e.stack || e}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}

for (const e of errors) log(`script error: ${e}`);
check(errors.length === 0, `no console error or page error (${errors.length})`);
if (failures.length) {
  console.log(`admin page test: ${failures.length} failure(s)`);
  process.exit(1);
}
console.log(`admin page test: passed in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
