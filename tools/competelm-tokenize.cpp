// competelm-tokenize: text files → GPT-2 BPE token shards in llm.c's format.
// Each input file is one document, preceded by the end-of-text token (llm.c's convention).
// Whole documents go to either the validation or the training split, chosen deterministically.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "data/shard.hpp"
#include "tokenizer/bpe_files.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"

namespace fs = std::filesystem;
using namespace competelm;

namespace {

constexpr const char* kUsage = R"(usage: competelm-tokenize [options] INPUT...

Tokenizes text with GPT-2's byte-level BPE into token shards in llm.c's format
(256 x int32 header, then the tokens; header ints 3-5 carry a checksum of the
tokens, which competelm verifies and llm.c ignores). Each input file is one document and is
preceded by the end-of-text token 50256. INPUT may be a file or a directory
(searched recursively; hidden files skipped); files are taken in sorted path
order, so the output is deterministic.

Whole documents are held out for validation: round(N x FRACTION) of the N
documents (at least one), evenly spread over the sorted list. Output files:
  OUT_DIR/NAME_val_000000.bin, NAME_val_000001.bin, ...
  OUT_DIR/NAME_train_000000.bin, NAME_train_000001.bin, ...
A new shard starts every --shard-tokens tokens (documents may span shards).
Stale shards of an earlier run with the same NAME are removed.

tokenizer:
  --tokenizer-dir DIR    directory holding encoder.json and vocab.bpe
                         (default: data/tokenizer)
  --encoder PATH         encoder.json, or a directory holding encoder.json and
                         vocab.bpe (overrides --tokenizer-dir)
  --vocab PATH           vocab.bpe (default: next to encoder.json)
output:
  --out-dir DIR          where to write the shards (default: .; created)
  --name NAME            shard file prefix (default: data)
  --val-fraction F       fraction of documents for validation, 0 <= F < 1;
                         0 writes no validation split (default: 0.1)
  --shard-tokens N       tokens per shard file (default: 100000000)
  --format u16|u32       u16: llm.c version 1 (default); u32: version 2
  --seed N               shifts which documents are held out (default: 0)
  -q, --quiet            no progress output
  -h, --help             this text

example:
  competelm-tokenize --tokenizer-dir data/tokenizer --out-dir data/brown \
      --name brown --val-fraction 0.1 data/brown/text
)";

struct Options {
  std::string tokenizer_dir = "data/tokenizer";
  std::optional<std::string> encoder, vocab;
  std::string out_dir = ".";
  std::string name = "data";
  double val_fraction = 0.1;
  uint64_t shard_tokens = 100'000'000;
  int32_t version = kShardVersionU16;
  uint64_t seed = 0;
  bool quiet = false;
  std::vector<std::string> inputs;
};

struct UsageError {
  std::string message;
};

uint64_t parse_uint(const std::string& flag, const std::string& v) {
  size_t used = 0;
  unsigned long long x = 0;
  try {
    x = std::stoull(v, &used);
  } catch (...) {
    used = 0;
  }
  if (used != v.size() || v.empty() || v[0] == '-')
    throw UsageError{fmt::format("{} expects a non-negative integer, got '{}'", flag, v)};
  return x;
}

Options parse_args(int argc, char** argv) {
  Options o;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError{fmt::format("{} needs a value", a)};
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--tokenizer-dir") {
      o.tokenizer_dir = value();
    } else if (a == "--encoder") {
      o.encoder = value();
    } else if (a == "--vocab") {
      o.vocab = value();
    } else if (a == "--out-dir") {
      o.out_dir = value();
    } else if (a == "--name") {
      o.name = value();
      if (o.name.empty() || o.name.find('/') != std::string::npos)
        throw UsageError{fmt::format("--name must be a plain file prefix, got '{}'", o.name)};
    } else if (a == "--val-fraction") {
      const std::string v = value();
      size_t used = 0;
      try {
        o.val_fraction = std::stod(v, &used);
      } catch (...) {
        used = 0;
      }
      if (used != v.size() || !(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
        throw UsageError{fmt::format("--val-fraction expects a number in [0, 1), got '{}'", v)};
    } else if (a == "--shard-tokens") {
      o.shard_tokens = parse_uint(a, value());
      if (o.shard_tokens == 0 || o.shard_tokens > 0x7FFFFFFFull)
        throw UsageError{"--shard-tokens must be between 1 and 2147483647 (header is int32)"};
    } else if (a == "--format") {
      const std::string v = value();
      if (v == "u16") o.version = kShardVersionU16;
      else if (v == "u32") o.version = kShardVersionU32;
      else throw UsageError{fmt::format("--format expects u16 or u32, got '{}'", v)};
    } else if (a == "--seed") {
      o.seed = parse_uint(a, value());
    } else if (a == "-q" || a == "--quiet") {
      o.quiet = true;
    } else if (a == "--") {
      o.inputs.insert(o.inputs.end(), args.begin() + static_cast<long>(i) + 1, args.end());
      break;
    } else if (a.starts_with("-") && a.size() > 1) {
      throw UsageError{fmt::format("unknown option '{}'", a)};
    } else {
      o.inputs.push_back(a);
    }
  }
  if (o.inputs.empty()) throw UsageError{"no INPUT given"};
  return o;
}

// Every input file, directories expanded recursively; sorted within each INPUT.
std::vector<fs::path> collect_documents(const std::vector<std::string>& inputs) {
  std::vector<fs::path> docs;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    if (ec || !fs::exists(st)) fail("input '{}' does not exist", input);
    if (fs::is_regular_file(st)) {
      docs.emplace_back(input);
      continue;
    }
    if (!fs::is_directory(st)) fail("input '{}' is neither a file nor a directory", input);
    std::vector<fs::path> found;
    for (auto it = fs::recursive_directory_iterator(input, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      const std::string fname = it->path().filename().string();
      if (fname.starts_with(".")) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file()) found.push_back(it->path());
    }
    if (ec) fail("cannot list input directory '{}': {}", input, ec.message());
    if (found.empty()) fail("input directory '{}' holds no files", input);
    std::sort(found.begin(), found.end());
    docs.insert(docs.end(), found.begin(), found.end());
  }
  return docs;
}

// Which documents are held out: k = round(n × fraction) of them (1 ≤ k ≤ n-1), spread evenly
// (Bresenham over the index, phase set by the seed) so every genre of a sorted corpus is seen.
std::vector<bool> choose_validation(size_t n, double fraction, uint64_t seed) {
  std::vector<bool> val(n, false);
  if (fraction <= 0.0) return val;
  if (n < 2) fail("need at least 2 documents to hold one out for validation (got {}); "
                  "use --val-fraction 0 to write only a training split", n);
  auto k = static_cast<size_t>(static_cast<double>(n) * fraction + 0.5);
  k = std::clamp<size_t>(k, 1, n - 1);
  const size_t phase = seed % n;
  for (size_t i = 0; i < n; ++i) {
    const size_t x = i + phase;
    val[i] = ((x + 1) * k) / n > (x * k) / n;
  }
  return val;
}

// Accumulates one split's tokens and writes a shard whenever shard_tokens are buffered.
class ShardWriter {
 public:
  ShardWriter(fs::path dir, std::string prefix, uint64_t shard_tokens, int32_t version)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), shard_tokens_(shard_tokens),
        version_(version) {}

  void add(const std::vector<uint32_t>& tokens) {
    buffer_.insert(buffer_.end(), tokens.begin(), tokens.end());
    total_ += tokens.size();
    while (buffer_.size() >= shard_tokens_) {
      write(std::span<const uint32_t>(buffer_.data(), shard_tokens_));
      buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<long>(shard_tokens_));
    }
  }
  void finish() {
    if (!buffer_.empty()) write(buffer_);
    buffer_.clear();
  }
  // Shards named like ours beyond the ones just written come from an earlier, longer run.
  std::vector<std::string> remove_stale() const {
    std::vector<std::string> removed;
    for (size_t i = files_.size();; ++i) {
      const fs::path p = path(i);
      std::error_code ec;
      if (!fs::remove(p, ec)) break;
      removed.push_back(p.string());
    }
    return removed;
  }
  uint64_t total() const { return total_; }
  const std::vector<std::string>& files() const { return files_; }

 private:
  fs::path path(size_t index) const { return dir_ / fmt::format("{}_{:06d}.bin", prefix_, index); }
  void write(std::span<const uint32_t> tokens) {
    const fs::path p = path(files_.size());
    write_shard(p.string(), tokens, version_);
    files_.push_back(p.string());
  }

  fs::path dir_;
  std::string prefix_;
  uint64_t shard_tokens_;
  int32_t version_;
  std::vector<uint32_t> buffer_;
  uint64_t total_ = 0;
  std::vector<std::string> files_;
};

// Progress on stderr: a redrawn bar on a terminal, a few plain lines otherwise.
class Progress {
 public:
  Progress(size_t total_docs, uint64_t total_bytes, bool quiet)
      : total_docs_(total_docs), total_bytes_(total_bytes), quiet_(quiet),
        tty_(isatty(STDERR_FILENO) != 0), start_(Clock::now()), last_draw_(start_) {}

  void update(size_t docs, uint64_t bytes, uint64_t tokens) {
    if (quiet_) return;
    const auto now = Clock::now();
    if (tty_) {
      if (docs != total_docs_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
      last_draw_ = now;
      constexpr int kWidth = 30;
      const double frac = total_bytes_ ? static_cast<double>(bytes) / total_bytes_ : 1.0;
      const int filled = static_cast<int>(frac * kWidth);
      std::fprintf(stderr, "\r[%s%s] %zu/%zu docs  %.2fM tokens  %.1f MB/s ",
                   std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                   docs, total_docs_, tokens / 1e6, mb_per_s(bytes));
      if (docs == total_docs_) std::fputc('\n', stderr);
    } else {
      // Plain lines at 25 %, 50 %, 75 % and 100 % of the documents.
      const size_t quarter = (docs * 4) / std::max<size_t>(total_docs_, 1);
      if (quarter <= printed_quarter_) return;
      printed_quarter_ = quarter;
      std::fprintf(stderr, "tokenized %zu/%zu documents, %.2fM tokens, %.1f MB/s\n", docs,
                   total_docs_, tokens / 1e6, mb_per_s(bytes));
    }
    std::fflush(stderr);
  }
  double seconds() const {
    return std::chrono::duration<double>(Clock::now() - start_).count();
  }
  double mb_per_s(uint64_t bytes) const { return bytes / 1e6 / std::max(seconds(), 1e-9); }

 private:
  using Clock = std::chrono::steady_clock;
  size_t total_docs_;
  uint64_t total_bytes_;
  bool quiet_, tty_;
  Clock::time_point start_, last_draw_;
  size_t printed_quarter_ = 0;
};

// Creates the output directory and proves it is writable before hours of tokenizing.
void prepare_out_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("cannot create output directory '{}': {}", dir.string(), ec.message());
  const fs::path probe = dir / ".competelm-tokenize-probe";
  {
    std::ofstream out(probe);
    if (!out) fail("output directory '{}' is not writable", dir.string());
  }
  fs::remove(probe, ec);
}

int run(const Options& o) {
  std::string encoder_json, vocab_bpe;
  if (o.encoder) {
    const fs::path e(*o.encoder);
    encoder_json = fs::is_directory(e) ? (e / "encoder.json").string() : e.string();
    vocab_bpe = o.vocab ? *o.vocab
                        : (fs::is_directory(e) ? e / "vocab.bpe" : e.parent_path() / "vocab.bpe").string();
  } else {
    encoder_json = (fs::path(o.tokenizer_dir) / "encoder.json").string();
    vocab_bpe = o.vocab ? *o.vocab : (fs::path(o.tokenizer_dir) / "vocab.bpe").string();
  }

  const std::vector<fs::path> docs = collect_documents(o.inputs);
  const std::vector<bool> is_val = choose_validation(docs.size(), o.val_fraction, o.seed);
  const Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(encoder_json, vocab_bpe);
  if (o.version == kShardVersionU16 && tokenizer.vocab_size() > 65536)
    fail("vocabulary of {} tokens does not fit --format u16; use --format u32",
         tokenizer.vocab_size());
  prepare_out_dir(o.out_dir);

  uint64_t total_bytes = 0;
  for (const auto& d : docs) {
    std::error_code ec;
    total_bytes += fs::file_size(d, ec);
  }
  ShardWriter val(o.out_dir, o.name + "_val", o.shard_tokens, o.version);
  ShardWriter train(o.out_dir, o.name + "_train", o.shard_tokens, o.version);
  Progress progress(docs.size(), total_bytes, o.quiet);
  uint64_t bytes_done = 0;
  size_t val_docs = 0;
  std::vector<uint32_t> tokens;
  for (size_t i = 0; i < docs.size(); ++i) {
    const std::string text = read_file_bytes(docs[i].string(), "input file");
    tokens.assign(1, tokenizer.eot());
    const std::vector<uint32_t> ids = tokenizer.encode(text);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    (is_val[i] ? val : train).add(tokens);
    val_docs += is_val[i];
    bytes_done += text.size();
    progress.update(i + 1, bytes_done, val.total() + train.total());
  }
  val.finish();
  train.finish();
  const double secs = progress.seconds();
  std::vector<std::string> stale = val.remove_stale();
  for (auto& s : train.remove_stale()) stale.push_back(std::move(s));

  const uint64_t total_tokens = val.total() + train.total();
  fmt::print("documents: {} ({} train, {} val), {:.2f} MB of text\n", docs.size(),
             docs.size() - val_docs, val_docs, bytes_done / 1e6);
  fmt::print("tokens:    {} train, {} val ({:.2f}% val), {} total\n", train.total(), val.total(),
             total_tokens ? 100.0 * val.total() / total_tokens : 0.0, total_tokens);
  fmt::print("speed:     {:.2f} s, {:.1f} MB/s, {:.2f}M tokens/s\n", secs, bytes_done / 1e6 / secs,
             total_tokens / 1e6 / secs);
  for (const auto* w : {&val, &train})
    for (const auto& f : w->files()) fmt::print("wrote      {}\n", f);
  for (const auto& f : stale) fmt::print("removed stale shard {}\n", f);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "competelm-tokenize: %s\n(see competelm-tokenize --help)\n",
                 e.message.c_str());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "competelm-tokenize: error: %s\n", e.what());
    if (!e.hint().empty()) std::fprintf(stderr, "hint: %s\n", e.hint().c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "competelm-tokenize: error: %s\n", e.what());
    return 1;
  }
}
