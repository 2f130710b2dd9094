// Cleans and tokenizes texts with the web page's JavaScript (web/app/tokenizer.js) and the
// tables of an exported page folder; called by tests/test_export_web.py.
//   node tests/web/tokenize.mjs PAGE_DIR INPUT.json OUTPUT.json
// INPUT.json: a list of texts. OUTPUT.json: [{cleaned, ids}] (ids: packed, unpadded).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WordPieceTokenizer, makeCleaner } from '../../web/app/tokenizer.js';

const [pageDir, input, output] = process.argv.slice(2);
const read = (name) => JSON.parse(readFileSync(join(pageDir, name), 'utf-8'));
const config = read('model.json');
const tables = read('text_tables.json');
const tokenizer = new WordPieceTokenizer(read('tokenizer.json'), read('vocab.json'), tables);
const clean = makeCleaner(config.text_cleaning, tables);
const texts = JSON.parse(readFileSync(input, 'utf-8'));
const start = performance.now();
const results = texts.map((text) => {
  const cleaned = clean(text);
  return { cleaned, ids: tokenizer.pack(tokenizer.tokenIds(cleaned)).ids };
});
writeFileSync(output, JSON.stringify({ results, ms: performance.now() - start }));
