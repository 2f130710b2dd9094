// Drives an exported web page in headless Chromium (puppeteer-core); called by
// tests/test_export_web.py, which serves the page and compares the results with Python.
//   node tests/web/page.mjs JOB.json
// JOB.json: {chromium, url, lines_file, single_text, explain_text, attend_text, output}. Writes to `output`:
// every request the page made, console errors, load time, the single/explain/batch results, the
// CSV the page offers for download and the batch timing.
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', '..', 'web', 'package.json'));
const puppeteer = require('puppeteer-core');

const job = JSON.parse(readFileSync(process.argv[2], 'utf-8'));
const profile = mkdtempSync(join(tmpdir(), 'keras-effattn-chromium-'));
const out = { requests: [], errors: [] };
const browser = await puppeteer.launch({
  executablePath: job.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage', `--user-data-dir=${profile}`],
});
try {
  const page = await browser.newPage();
  page.on('request', (request) => out.requests.push(request.url()));
  page.on('pageerror', (error) => out.errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') out.errors.push(`console: ${message.text()}`);
  });
  page.on('requestfailed', (r) => out.errors.push(`failed: ${r.url()} ${r.failure()?.errorText}`));
  const timeout = job.timeout_ms ?? 120000;
  page.setDefaultTimeout(timeout);

  const t0 = performance.now();
  await page.goto(job.url, { waitUntil: 'load' });
  await page.waitForFunction(() => ['ready', 'error'].includes(
    document.getElementById('status').dataset.state));
  out.load_wall_ms = performance.now() - t0;
  out.status = await page.$eval('#status', (e) => e.textContent);
  out.load_ms = await page.evaluate(() => window.kea.loadMs ?? null);
  if (out.load_ms === null) throw new Error(`page did not load: ${out.status}`);

  // One text through the text box.
  await page.$eval('#text', (e, text) => { e.value = text; }, job.single_text);
  await page.click('#classify');
  await page.waitForFunction(() => document.getElementById('result').dataset.label);
  out.single = await page.$eval('#result', (e) => ({
    label: e.dataset.label, probability: Number(e.dataset.probability),
    shown_label: document.getElementById('label').textContent,
    shown_probability: document.getElementById('probability').textContent }));

  // The per-word view.
  await page.$eval('#text', (e, text) => { e.value = text; }, job.explain_text);
  const t2 = performance.now();
  await page.click('#explain');
  await page.waitForFunction(() => document.getElementById('explanation').dataset.done === 'true');
  out.explain_wall_ms = performance.now() - t2;
  out.explain = await page.evaluate(() => ({
    label: document.getElementById('result').dataset.label,
    probability: Number(document.getElementById('result').dataset.probability),
    words: [...document.querySelectorAll('#words span')].map((s) => (
      { word: s.textContent, score: Number(s.dataset.score) })) }));
  // The same occlusion through the page's API, to compare each score with Python.
  out.explain_api = await page.evaluate(
    (text) => window.kea.classifier.explain(text).then((e) => e.words), job.explain_text);

  // The attention view (exports with an attention output).
  await page.$eval('#text', (e, text) => { e.value = text; }, job.attend_text);
  await page.click('#attend');
  await page.waitForFunction(() => document.getElementById('attention').dataset.done === 'true');
  out.attend = await page.evaluate(() => ({
    words: [...document.querySelectorAll('#attention-words span')].map((s) => (
      { word: s.textContent, attention: Number(s.dataset.attention) })) }));
  out.attend_api = await page.evaluate(
    (text) => window.kea.classifier.attend(text).then((e) => e.words), job.attend_text);

  // Batch mode: a .txt file through the file input, then "Classify all".
  const input = await page.$('#file');
  await input.uploadFile(job.lines_file);
  await page.waitForFunction(() => document.getElementById('lines').value.length > 0);
  const t1 = performance.now();
  await page.click('#classify-all');
  await page.waitForFunction(
    () => document.getElementById('batch-status').dataset.done === 'true', { polling: 100 });
  out.batch_wall_ms = performance.now() - t1;
  out.batch_status = await page.$eval('#batch-status', (e) => e.textContent);
  out.batch = await page.$$eval('#results tbody tr', (rows) => rows.map((r) => ({
    line: Number(r.cells[0].textContent), label: r.dataset.label,
    probability: Number(r.dataset.probability) })));
  out.csv_download = await page.$eval('#download', async (a) => (a.hidden ? null
    : { name: a.download, text: await (await fetch(a.href)).text() }));
  // Per-review latency of one text at a time, measured inside the page.
  out.latency_ms = await page.evaluate(async (texts) => {
    const times = [];
    for (const text of texts) {
      const start = performance.now();
      await window.kea.classifier.classify(text);
      times.push(performance.now() - start);
    }
    return times;
  }, job.latency_texts ?? []);
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
  writeFileSync(job.output, JSON.stringify(out));
}
