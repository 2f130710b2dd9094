// Text cleaning and WordPiece tokenization in the browser, id for id the Python predictor's.
//
// Ports of keras_effattn/data/cleaning.py `clean_text` and export/tokenizer.py
// `WordPieceTokenizer` (which reproduces KerasHub). Everything that depends on Python's
// Unicode database or standard library tables is NOT re-derived from the browser's own
// (different) Unicode version: `python -m export.web` writes it into text_tables.json from the
// Python that exported the model, and this module reads it:
//   html5_entities, invalid_charrefs, invalid_codepoints  html.unescape's tables
//   whitespace                                            str.isspace() / re's \s
//   translate                                             clean_text's quote/dash table
//   kept_ranges, dropped_ranges, cjk_ranges               the tokenizer's split classes
//   ignorable_ranges, combining_mark_ranges               NFKC_Casefold removals, category Mn
//   casefold                                              str.casefold() per code point
// Only NFKC/NFD come from the browser (String.prototype.normalize), so a character assigned
// after the exporting Python's Unicode version could normalise differently.
// Strings are handled by code point (Array.from, regexes with the u flag), never by UTF-16 unit.

const hex = (code) => `\\u{${code.toString(16)}}`;
const rangeClass = (ranges) =>
  ranges.map(([lo, hi]) => (lo === hi ? hex(lo) : `${hex(lo)}-${hex(hi)}`)).join('');

// --------------------------------------------------------------------------- html.unescape
// Python's html._charref, character for character.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

export function makeUnescape(tables) {
  const entities = new Map(Object.entries(tables.html5_entities));
  const invalidCharrefs = new Map(
    Object.entries(tables.invalid_charrefs).map(([k, v]) => [Number(k), v]));
  const invalidCodepoints = new Set(tables.invalid_codepoints);
  const numeric = (digits, radix) => {
    // Python's int() has no size limit; anything past 0x10FFFF is replaced the same way.
    const trimmed = digits.replace(/^0+/, '');
    if (trimmed.length > 8) return '\uFFFD';
    const num = trimmed ? parseInt(trimmed, radix) : 0;
    if (invalidCharrefs.has(num)) return invalidCharrefs.get(num);
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return '\uFFFD';
    if (invalidCodepoints.has(num)) return '';
    return String.fromCodePoint(num);
  };
  const replace = (whole, s) => {
    if (s[0] === '#') {
      const body = s.replace(/;$/, '');
      return body[1] === 'x' || body[1] === 'X' ? numeric(body.slice(2), 16)
        : numeric(body.slice(1), 10);
    }
    if (entities.has(s)) return entities.get(s);
    // The longest entity name that prefixes s (as the HTML5 standard and Python do).
    const chars = Array.from(s);
    for (let x = chars.length - 1; x > 1; x--) {
      const prefix = chars.slice(0, x).join('');
      if (entities.has(prefix)) return entities.get(prefix) + chars.slice(x).join('');
    }
    return '&' + s;
  };
  return (text) => (text.includes('&') ? text.replace(CHARREF, replace) : text);
}

// --------------------------------------------------------------------------- clean_text
export function makeCleanText(tables) {
  const unescape = makeUnescape(tables);
  const ws = rangeClass(tables.whitespace.map((c) => [c, c]));
  const tag = new RegExp(`</?[A-Za-z][A-Za-z0-9]*(?:[${ws}][^<>]*)?/?>`, 'gu');
  const control = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]/gu;
  const dots = /\.{3,}/gu;
  const repeatMark = /([!?,;:*~=_\-])\1+/gu;
  const spaces = new RegExp(`[${ws}]+`, 'gu');
  const strip = new RegExp(`^[${ws}]+|[${ws}]+$`, 'gu');
  const translate = new Map(
    Object.entries(tables.translate).map(([k, v]) => [String.fromCodePoint(Number(k)), v]));
  const translateClass = new RegExp(
    `[${rangeClass([...translate.keys()].map((c) => [c.codePointAt(0), c.codePointAt(0)]))}]`,
    'gu');
  return function cleanText(text) {
    text = unescape(text);
    text = text.replace(tag, ' ');
    text = text.normalize('NFKC');
    text = text.replace(translateClass, (c) => translate.get(c) ?? '');
    text = text.replace(control, ' ');
    text = text.replace(dots, '...');
    text = text.replace(repeatMark, '$1');
    return text.replace(spaces, ' ').replace(strip, '');
  };
}

export function makeCleaner(name, tables) {
  if (name === 'none') return (text) => text;
  if (name === 'keras_effattn.clean_text') return makeCleanText(tables);
  throw new Error(`Unknown text_cleaning ${JSON.stringify(name)}; re-export the page.`);
}

// --------------------------------------------------------------------------- WordPiece
export class WordPieceTokenizer {
  // config: tokenizer.json; vocabulary: list of tokens (index = id); tables: text_tables.json.
  constructor(config, vocabulary, tables) {
    this.config = config;
    this.vocabulary = vocabulary;
    this.sequenceLength = config.sequence_length;
    this.maxBytesPerWord = config.max_bytes_per_word;
    this.suffix = config.suffix_indicator;
    this.ids = new Map();
    vocabulary.forEach((token, index) => this.ids.set(token, index)); // last duplicate wins
    for (const key of ['oov_token', 'start_token', 'end_token', 'pad_token']) {
      if (!this.ids.has(config[key])) throw new Error(`${key} ${config[key]} not in the vocabulary`);
    }
    this.oovId = this.ids.get(config.oov_token);
    this.startId = this.ids.get(config.start_token);
    this.endId = this.ids.get(config.end_token);
    this.padId = this.ids.get(config.pad_token);
    const kept = rangeClass(tables.kept_ranges)
      + (config.split_on_cjk ? rangeClass(tables.cjk_ranges) : '');
    this.delimiters = new RegExp(`([${kept}])|[${rangeClass(tables.dropped_ranges)}]+`, 'gu');
    this.ignorable = new RegExp(`[${rangeClass(tables.ignorable_ranges)}]`, 'gu');
    this.combiningMark = new RegExp(`[${rangeClass(tables.combining_mark_ranges)}]`, 'gu');
    this.casefoldMap = new Map(
      Object.entries(tables.casefold).map(([k, v]) => [String.fromCodePoint(Number(k)), v]));
    this.encoder = new TextEncoder();
    this.cache = new Map();
  }

  casefold(text) {
    // NFKC_Casefold as export/tokenizer.py `casefold`: NFKC, str.casefold, NFKC, ignorables out.
    let folded = '';
    for (const c of text.normalize('NFKC')) folded += this.casefoldMap.get(c) ?? c;
    return folded.normalize('NFKC').replace(this.ignorable, '');
  }

  pretokenize(text) {
    if (this.config.strip_accents) text = text.normalize('NFD').replace(this.combiningMark, '');
    const words = [];
    let position = 0;
    for (const match of text.matchAll(this.delimiters)) {
      if (match.index > position) words.push(text.slice(position, match.index));
      if (match[1] !== undefined) words.push(match[1]);
      position = match.index + match[0].length;
    }
    if (position < text.length) words.push(text.slice(position));
    return this.config.lowercase ? words.map((w) => this.casefold(w)) : words;
  }

  wordIds(word) {
    if (!word) return [];
    let cached = this.cache.get(word);
    if (cached) return cached;
    cached = this.wordIdsUncached(word);
    if (this.cache.size > 65536) this.cache.clear();
    this.cache.set(word, cached);
    return cached;
  }

  wordIdsUncached(word) {
    if (this.encoder.encode(word).length > this.maxBytesPerWord) return [this.oovId];
    const chars = Array.from(word);
    const ids = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found;
      while (start < end) {
        const body = chars.slice(start, end).join('');
        found = this.ids.get(start === 0 ? body : this.suffix + body);
        if (found !== undefined) break;
        end -= 1;
      }
      if (found === undefined) return [this.oovId];
      ids.push(found);
      start = end;
    }
    return ids;
  }

  // Words (after splitting and folding) with the ids of each: [{word, ids}].
  words(text) {
    return this.pretokenize(text).map((word) => ({ word, ids: this.wordIds(word) }))
      .filter((w) => w.ids.length > 0);
  }

  tokenIds(text) {
    return this.words(text).flatMap((w) => w.ids);
  }

  // [CLS] ids[:L-2] [SEP], unpadded (the caller pads); also how many ids were cut.
  pack(ids) {
    const limit = this.sequenceLength - 2;
    return { ids: [this.startId, ...ids.slice(0, limit), this.endId],
             truncated: Math.max(0, ids.length - limit) };
  }

  // The model inputs of one text padded to `width` (default: the model's sequence length).
  encode(text, width = this.sequenceLength) {
    const { ids } = this.pack(this.tokenIds(text));
    const tokenIds = new Int32Array(width).fill(this.padId);
    tokenIds.set(ids.slice(0, width));
    const paddingMask = tokenIds.map((id) => (id !== this.padId ? 1 : 0));
    return { tokenIds, paddingMask };
  }
}
