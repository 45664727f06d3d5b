#!/usr/bin/env node
// Reference GPT-2 token ids from the npm gpt-3-encoder package (the JavaScript encoder that
// competelm's C++ tokenizer must match exactly).
// usage: node scripts/tokenizer_reference.mjs ENCODER_PACKAGE_DIR OUT_FILE TEXT_FILE...
// OUT_FILE (little-endian uint32): for each TEXT_FILE in order, its token count, then its ids.
// Files are read as UTF-8 the way node does (invalid bytes → U+FFFD), as the encoder expects.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [pkgDir, outFile, ...files] = process.argv.slice(2);
if (!pkgDir || !outFile) {
  console.error('usage: node scripts/tokenizer_reference.mjs ENCODER_PACKAGE_DIR OUT_FILE TEXT_FILE...');
  process.exit(2);
}
// Encoder.js is loaded from the package unchanged except for one line: its encode() grows the
// result with `bpe_tokens = bpe_tokens.concat(new_tokens)`, which is quadratic in the document
// length (~40 s for Brown). An in-place push gives the identical array, linearly.
const encoderPath = path.resolve(pkgDir, 'Encoder.js');
const slow = 'bpe_tokens = bpe_tokens.concat(new_tokens)';
const source = fs.readFileSync(encoderPath, 'utf8');
if (source.split(slow).length !== 2) {
  console.error(`tokenizer_reference: ${encoderPath} is not the expected gpt-3-encoder 1.1.x source`);
  process.exit(1);
}
const module_ = { exports: {} };
new Function('require', 'module', 'exports', '__dirname', '__filename',
  source.replace(slow, 'for (const t of new_tokens) bpe_tokens.push(t)'))(
  createRequire(encoderPath), module_, module_.exports, path.dirname(encoderPath), encoderPath);
const { encode } = module_.exports;

const chunks = [];
let total = 0;
for (const f of files) {
  const ids = encode(fs.readFileSync(f, 'utf8'));
  const buf = new Uint32Array(ids.length + 1);
  buf[0] = ids.length;
  for (let i = 0; i < ids.length; i++) {
    if (!Number.isInteger(ids[i])) {
      console.error(`tokenizer_reference: ${f}: non-integer id at ${i}`);
      process.exit(1);
    }
    buf[i + 1] = ids[i];
  }
  chunks.push(Buffer.from(buf.buffer));
  total += ids.length;
}
fs.writeFileSync(outFile, Buffer.concat(chunks));
console.error(`tokenizer_reference: ${files.length} files, ${total} tokens`);
