// The page of an exported keras_effattn classifier: loads model.onnx into onnxruntime-web
// (WebAssembly, one thread: no SharedArrayBuffer, so no COOP/COEP headers needed), cleans and
// tokenizes texts exactly as keras_effattn_runtime/predict.py does (tokenizer.js) and classifies them.
// Every file it loads is in this folder, by a relative URL.
import * as ort from './ort/ort.wasm.min.mjs';
import { WordPieceTokenizer, makeCleaner } from './tokenizer.js';

const started = performance.now();
const $ = (id) => document.getElementById(id);

ort.env.wasm.numThreads = 1;
ort.env.wasm.proxy = false;
ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;

async function fetchJson(name) {
  const response = await fetch(name);
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return response.json();
}

function softmax(logits) {
  const max = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((x) => x / sum);
}

class Classifier {
  constructor(session, config, tokenizer, clean) {
    Object.assign(this, { session, config, tokenizer, clean });
    this.labels = config.labels;
  }

  static async load() {
    const [config, tokenizerConfig, vocabulary, tables] = await Promise.all(
      ['model.json', 'tokenizer.json', 'vocab.json', 'text_tables.json'].map(fetchJson));
    const session = await ort.InferenceSession.create(config.model_file,
      { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    const tokenizer = new WordPieceTokenizer(tokenizerConfig, vocabulary, tables);
    return new Classifier(session, config, tokenizer, makeCleaner(config.text_cleaning, tables));
  }

  get hasAttention() {
    return (this.config.outputs ?? ['logits']).includes('attention');
  }

  // Packed ids -> the model's outputs, padded as the Python predictor pads (its own length when
  // the export verified padding invariance, else the model's maximum length).
  async run(packed) {
    const width = this.config.padding_invariant ? packed.length : this.config.max_length;
    const tokenIds = new Int32Array(width).fill(this.tokenizer.padId);
    tokenIds.set(packed);
    const feeds = {};
    for (const name of this.config.inputs) {
      let data = tokenIds;
      if (name === 'padding_mask') data = tokenIds.map((id) => (id !== this.tokenizer.padId ? 1 : 0));
      if (name === 'segment_ids') data = new Int32Array(width);
      const type = this.config.input_types[name];
      const values = type === 'bool' ? Uint8Array.from(data, (x) => (x ? 1 : 0))
        : type === 'int64' ? BigInt64Array.from(data, (x) => BigInt(x))
        : type === 'float' ? Float32Array.from(data) : data;
      feeds[name] = new ort.Tensor(type, values, [1, width]);
    }
    return this.session.run(feeds);
  }

  async logits(packed) {
    return Array.from((await this.run(packed)).logits.data);
  }

  prepare(text) {
    const cleaned = this.clean(text);
    const words = this.tokenizer.words(cleaned);
    const packed = this.tokenizer.pack(words.flatMap((w) => w.ids));
    return { cleaned, words, packed };
  }

  result(logits) {
    const probabilities = softmax(logits);
    const best = probabilities.indexOf(Math.max(...probabilities));
    return {
      label: this.labels[best],
      index: best,
      probability: probabilities[best],
      probabilities: Object.fromEntries(this.labels.map((n, i) => [n, probabilities[i]])),
      logits,
    };
  }

  async classify(text) {
    const { packed } = this.prepare(text);
    return { ...this.result(await this.logits(packed.ids)), truncated: packed.truncated };
  }

  // Occlusion: for each word the model sees (within the truncation), the drop in the predicted
  // label's probability when the text is classified without that word.
  async explain(text, onProgress = () => {}) {
    const { words, packed } = this.prepare(text);
    const base = this.result(await this.logits(packed.ids));
    const limit = this.tokenizer.sequenceLength - 2;
    const seen = [];
    let count = 0;
    for (const w of words) {
      if (count >= limit) break;
      seen.push(w);
      count += w.ids.length;
    }
    const scores = [];
    for (let i = 0; i < seen.length; i++) {
      const ids = seen.flatMap((w, j) => (j === i ? [] : w.ids));
      const probabilities = softmax(await this.logits(this.tokenizer.pack(ids).ids));
      scores.push(base.probability - probabilities[base.index]);
      onProgress(i + 1, seen.length);
    }
    return { ...base, words: seen.map((w, i) => ({ word: w.word, score: scores[i] })) };
  }

  // The export's attention output: how much the top layer attended to each word the model
  // reads (its pieces summed, [CLS]/[SEP] left out, shared out to sum to 1), as
  // Predictor.explain computes it in Python.
  async attend(text) {
    const { words, packed } = this.prepare(text);
    const outputs = await this.run(packed.ids);
    const weights = outputs.attention.data;
    const limit = packed.ids.length - 1;
    const seen = [];
    let position = 1;
    for (const w of words) {
      if (position >= limit) break;
      const end = Math.min(position + w.ids.length, limit);
      let sum = 0;
      for (let i = position; i < end; i++) sum += weights[i];
      seen.push({ word: w.word, attention: sum });
      position = end;
    }
    const total = seen.reduce((a, w) => a + w.attention, 0) || 1;
    for (const w of seen) w.attention /= total;
    return { ...this.result(Array.from(outputs.logits.data)), truncated: packed.truncated,
             words: seen };
  }
}

// ----------------------------------------------------------------------------- the page
function csvField(value) {
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(labels, rows) {
  const header = ['line', 'label', 'probability', ...labels.map((n) => `p_${n}`), 'text'];
  const lines = [header.map(csvField).join(',')];
  for (const r of rows) {
    lines.push([r.line, r.label, r.probability, ...labels.map((n) => r.probabilities[n]), r.text]
      .map(csvField).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}

function showResult(classifier, result) {
  $('result').hidden = false;
  $('label').textContent = result.label;
  $('probability').textContent = result.probability.toFixed(4);
  $('result').dataset.label = result.label;
  $('result').dataset.probability = String(result.probability);
  const bars = $('bars');
  bars.replaceChildren(...classifier.labels.map((name) => {
    const row = document.createElement('div');
    row.className = 'bar';
    const p = result.probabilities[name];
    row.innerHTML = '<span class="name"></span><span class="fill"></span><span class="value"></span>';
    row.children[0].textContent = name;
    row.children[1].style.width = `${(p * 20).toFixed(2)}rem`;
    row.children[2].textContent = p.toFixed(4);
    return row;
  }));
  $('truncated').hidden = !result.truncated;
  $('truncated').textContent = result.truncated
    ? `The text is longer than the model reads: its last ${result.truncated} tokens were ignored.`
    : '';
}

function showExplanation(explanation) {
  $('explanation').hidden = false;
  $('explained-label').textContent = explanation.label;
  const max = Math.max(1e-9, ...explanation.words.map((w) => Math.abs(w.score)));
  $('words').replaceChildren(...explanation.words.map((w) => {
    const span = document.createElement('span');
    span.textContent = w.word;
    const alpha = Math.min(1, Math.abs(w.score) / max).toFixed(3);
    span.style.background = w.score >= 0 ? `rgba(40, 160, 60, ${alpha})` : `rgba(200, 50, 50, ${alpha})`;
    span.title = `probability of ${explanation.label} without this word: ` +
      `${(explanation.probability - w.score).toFixed(4)} (${w.score >= 0 ? '-' : '+'}${Math.abs(w.score).toFixed(4)})`;
    span.dataset.score = String(w.score);
    return [span, document.createTextNode(' ')];
  }).flat());
}

function showAttention(attended) {
  $('attention').hidden = false;
  $('attended-label').textContent = attended.label;
  const max = Math.max(1e-9, ...attended.words.map((w) => w.attention));
  $('attention-words').replaceChildren(...attended.words.map((w) => {
    const span = document.createElement('span');
    span.textContent = w.word;
    span.style.background = `rgba(60, 90, 200, ${Math.min(1, w.attention / max).toFixed(3)})`;
    span.title = `${(100 * w.attention).toFixed(1)} % of the attention`;
    span.dataset.attention = String(w.attention);
    return [span, document.createTextNode(' ')];
  }).flat());
}

async function classifyAll(classifier) {
  const texts = $('lines').value.split(/\r\n|\r|\n/)
    .map((text, i) => ({ text, line: i + 1 })).filter((t) => t.text.trim());
  const body = $('results').tBodies[0];
  body.replaceChildren();
  $('results').hidden = false;
  $('download').hidden = true;
  $('batch-status').dataset.done = 'false';
  const rows = [];
  const start = performance.now();
  for (const { text, line } of texts) {
    const r = await classifier.classify(text);
    rows.push({ line, text, ...r });
    const tr = document.createElement('tr');
    tr.dataset.label = r.label;
    tr.dataset.probability = String(r.probability);
    for (const value of [line, r.label, r.probability.toFixed(4), text]) {
      const td = document.createElement('td');
      td.textContent = value;
      tr.appendChild(td);
    }
    tr.lastChild.className = 'text';
    body.appendChild(tr);
    $('batch-status').textContent = `${rows.length} / ${texts.length} texts`;
  }
  const seconds = (performance.now() - start) / 1000;
  const csv = toCsv(classifier.labels, rows);
  const link = $('download');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([csv], { type: 'text/csv' }));
  link.hidden = rows.length === 0;
  $('batch-status').textContent = `${rows.length} texts in ${seconds.toFixed(1)} s` +
    (rows.length ? ` (${(1000 * seconds / rows.length).toFixed(1)} ms per text)` : '');
  $('batch-status').dataset.done = 'true';
  window.kea.lastCsv = csv;
  return rows;
}

async function main() {
  let classifier;
  try {
    classifier = await Classifier.load();
  } catch (error) {
    $('status').textContent = `The model could not be loaded: ${error.message ?? error}`;
    $('status').dataset.state = 'error';
    throw error;
  }
  const c = classifier.config;
  window.kea.classifier = classifier;
  window.kea.loadMs = performance.now() - started;
  $('status').textContent = `Ready (loaded in ${(window.kea.loadMs / 1000).toFixed(1)} s).`;
  $('status').dataset.state = 'ready';
  $('model-info').textContent = `Labels: ${c.labels.join(', ')} · ${c.precision} · reads up to ` +
    `${c.max_length} tokens · attention ${c.attention_spec ?? '?'} · onnxruntime-web ${c.onnxruntime_web}`;
  for (const id of ['classify', 'explain', 'classify-all']) $(id).disabled = false;
  $('attend').hidden = !classifier.hasAttention;
  $('attend').disabled = !classifier.hasAttention;

  const busy = async (button, work) => {
    button.disabled = true;
    try { await work(); } catch (error) { $('status').textContent = `Error: ${error.message ?? error}`; }
    finally { button.disabled = false; }
  };
  $('classify').addEventListener('click', () => busy($('classify'), async () => {
    const text = $('text').value;
    if (!text.trim()) return;
    $('explanation').hidden = true;
    $('attention').hidden = true;
    showResult(classifier, await classifier.classify(text));
  }));
  $('attend').addEventListener('click', () => busy($('attend'), async () => {
    const text = $('text').value;
    if (!text.trim()) return;
    const attended = await classifier.attend(text);
    showResult(classifier, attended);
    showAttention(attended);
    $('attention').dataset.done = 'true';
  }));
  $('explain').addEventListener('click', () => busy($('explain'), async () => {
    const text = $('text').value;
    if (!text.trim()) return;
    const explanation = await classifier.explain(text, (done, total) => {
      $('status').textContent = `Explaining: ${done} / ${total} words`;
    });
    showResult(classifier, explanation);
    showExplanation(explanation);
    $('status').textContent = 'Ready.';
    $('explanation').dataset.done = 'true';
  }));
  $('classify-all').addEventListener('click', () => busy($('classify-all'), () => classifyAll(classifier)));
  $('file').addEventListener('change', async () => {
    const file = $('file').files[0];
    if (file) $('lines').value = await file.text();
  });
}

window.kea = { toCsv };
window.kea.ready = main();
