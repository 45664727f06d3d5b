// Export and import of saved models: our safetensors reader/writer (round trip, F16/BF16,
// corrupt files), the Hugging Face GPT-2 layout (export → import bit-exact; logits checked
// against an independent PyTorch GPT-2), MoE models, and llm.c checkpoints (fp32 and bf16).
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/backend.hpp"
#include "checkpoint/checkpoint.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "core/json.hpp"
#include "core/rng.hpp"
#include "export/export_model.hpp"
#include "export/import_model.hpp"
#include "export/model_tensors.hpp"
#include "export/safetensors.hpp"
#include "model/from_config.hpp"
#include "model/saved_model.hpp"
#include "train/adamw.hpp"
#include "train/run_state.hpp"
#include "train_fixture.hpp"

using namespace competelm;
using competelm::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

Config tiny_config(const std::string& run_dir, const std::string& moe_yaml = "") {
  return parse_config(fmt::format(R"(
run: {{dir: {}, seed: 5, device: cpu, threads: 2}}
model: {{n_layer: 2, d_model: 32, n_head: 4, seq_len: 16, vocab_size: 100, init_std: 0.2}}
{}
)",
                                  run_dir, moe_yaml),
                      "export-test.yaml");
}

// A freshly initialised model saved as a training checkpoint at step 3.
std::string save_checkpoint(const Config& cfg) {
  auto be = make_backend("cpu", 2);
  GPT2 model(*be, model_shape(cfg), model_init(cfg), 1, 1, model_moe(cfg));
  model.init_weights(cfg.run.seed);
  AdamW opt(*be, model.params(), AdamWOptions{});
  TrainState st;
  st.step = 3;
  return save_run_checkpoint(cfg.run.dir, cfg, model, opt, st, *be);
}

std::map<std::string, LoadedTensor> params_of(const std::string& checkpoint) {
  SavedModel sm = load_saved_model(checkpoint, 1, 1);
  return model_tensors_host(*sm.model, *sm.backend);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
}
std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}
// A safetensors file from a header text and a data buffer (no validation: for bad files).
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; i++) out[i] = char(n >> (8 * i));
  return out + header + data;
}

}  // namespace

TEST_CASE("safetensors: write then read is bit-exact with the header padded to 8 bytes", "[export]") {
  TempDir tmp("st-roundtrip");
  Rng rng(1);
  std::vector<float> a(3 * 5), b(7), scalar = {-0.0f};
  for (auto& x : a) x = rng.normal();
  for (auto& x : b) x = rng.normal() * 1e-30f;  // subnormal-ish values survive too
  b[2] = INFINITY;
  const std::vector<NamedTensor> tensors = {
      {"blocks.0.a", {3, 5}, a.data()}, {"b", {7}, b.data()}, {"scalar", {}, scalar.data()}, {"empty", {0, 4}, nullptr}};
  const std::string path = tmp.str() + "/x.safetensors";
  write_safetensors(path, tensors, {{"format", "pt"}, {"note", "quote \" and \\ ok"}});
  const SafetensorsFile f = read_safetensors(path);
  CHECK(f.header_bytes % 8 == 0);
  CHECK(f.metadata.at("format") == "pt");
  CHECK(f.metadata.at("note") == "quote \" and \\ ok");
  CHECK(f.order == std::vector<std::string>{"blocks.0.a", "b", "scalar", "empty"});
  CHECK(f.tensors.at("blocks.0.a").shape == std::vector<int64_t>{3, 5});
  CHECK(same_bits(f.tensors.at("blocks.0.a").data, a));
  CHECK(same_bits(f.tensors.at("b").data, b));
  CHECK(f.tensors.at("scalar").shape.empty());
  CHECK(std::signbit(f.tensors.at("scalar").data.at(0)));
  CHECK(f.tensors.at("empty").data.empty());
  CHECK(f.dtypes.at("b") == "F32");
  // The header is plain JSON with the documented fields.
  const std::string raw = read_bytes(path);
  CHECK(raw.find("\"b\":{\"dtype\":\"F32\",\"shape\":[7],\"data_offsets\":[60,88]}") != std::string::npos);
}

TEST_CASE("safetensors: F16 and BF16 tensors are read as fp32", "[export]") {
  TempDir tmp("st-half");
  // F16: 1, -2, the smallest subnormal (2^-24), 65504 (max), -inf; BF16: 1, -3.140625
  const uint16_t h[5] = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0xFC00};
  const uint16_t bf[2] = {0x3F80, 0xC049};
  std::string data(reinterpret_cast<const char*>(h), 10);
  data.append(reinterpret_cast<const char*>(bf), 4);
  const std::string header = R"({"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},)"
                             R"("bf":{"dtype":"BF16","shape":[1,2],"data_offsets":[10,14]}})";
  const std::string path = tmp.str() + "/half.safetensors";
  write_bytes(path, safetensors_bytes(header, data));
  const SafetensorsFile f = read_safetensors(path);
  CHECK(f.tensors.at("h").data == std::vector<float>{1.0f, -2.0f, std::ldexp(1.0f, -24), 65504.0f, -INFINITY});
  CHECK(f.tensors.at("bf").data == std::vector<float>{1.0f, -3.140625f});
  CHECK(f.dtypes.at("bf") == "BF16");
}

TEST_CASE("safetensors: corrupt or truncated files are refused naming the file and tensor", "[export]") {
  TempDir tmp("st-bad");
  const std::string path = tmp.str() + "/bad.safetensors";
  std::vector<float> w(16, 1.5f);
  write_safetensors(path, {{"w", {4, 4}, w.data()}});
  const std::string good = read_bytes(path);
  auto refuse = [&](const std::string& bytes, const std::string& expect) {
    write_bytes(path, bytes);
    const std::string e = error_of([&] { read_safetensors(path); });
    INFO(e);
    CHECK(e.find(path) != std::string::npos);
    CHECK(e.find(expect) != std::string::npos);
  };
  refuse(good.substr(0, good.size() - 4), "tensor 'w'");             // truncated data
  refuse(good.substr(0, 5), "header length is missing");              // not even the length
  refuse(good.substr(0, 8) + good.substr(8, 20), "header length");    // header cut off
  std::string huge = good;
  huge[6] = 1;  // N ≈ 2^48
  refuse(huge, "header length");
  std::string garbled = good;
  garbled[9] = '!';  // inside the JSON
  refuse(garbled, "header");
  refuse(safetensors_bytes(R"({"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})", std::string(16, '\0')),
         "dtype I64");
  refuse(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}})", std::string(12, '\0')),
         "tensor 'w'");  // size disagrees with the shape
  refuse(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                           std::string(12, '\0')),
         "overlap");
  refuse(safetensors_bytes(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(12, '\0')),
         "follow the last tensor");
  CHECK(error_of([&] { read_safetensors(tmp.str() + "/missing.safetensors"); }).find("missing.safetensors") !=
        std::string::npos);
}

TEST_CASE("export hf then import gives bit-identical parameters", "[export]") {
  TempDir tmp("export-hf");
  const Config cfg = tiny_config(tmp.str() + "/run");
  const std::string ckpt = save_checkpoint(cfg);
  const std::string out = tmp.str() + "/hf";
  const ExportResult r = export_checkpoint(tmp.str() + "/run", ExportFormat::HuggingFace, out);  // run dir → newest
  CHECK(r.checkpoint_dir == ckpt);

  // The HF layout: no prefix, V rows of wte, Conv1D weights transposed.
  const SafetensorsFile hf = read_safetensors(out + "/model.safetensors");
  const auto ours = params_of(ckpt);
  CHECK(hf.metadata.at("format") == "pt");
  CHECK(hf.tensors.size() == 2 + 2 * 12 + 2);
  CHECK(hf.tensors.at("wte.weight").shape == std::vector<int64_t>{100, 32});
  const LoadedTensor& c_attn = hf.tensors.at("h.1.attn.c_attn.weight");
  const LoadedTensor& qkv = ours.at("blocks.1.attn.qkv.weight");
  REQUIRE(c_attn.shape == std::vector<int64_t>{32, 96});
  CHECK(c_attn.data[5 * 96 + 70] == qkv.data[70 * 32 + 5]);  // (C, 3C)[c][o] = ours (3C, C)[o][c]
  CHECK(hf.tensors.at("h.0.mlp.c_proj.weight").shape == std::vector<int64_t>{128, 32});
  const JsonValue config = parse_json(read_bytes(out + "/config.json"), "config.json");
  CHECK(config.at("n_embd").as_int64() == 32);
  CHECK(config.at("n_layer").as_int64() == 2);
  CHECK(config.at("n_head").as_int64() == 4);
  CHECK(config.at("n_positions").as_int64() == 16);
  CHECK(config.at("vocab_size").as_int64() == 100);
  CHECK(config.at("activation_function").as_string() == "gelu_new");
  CHECK(config.at("model_type").as_string() == "gpt2");
  CHECK(config.at("layer_norm_epsilon").as_double() == 1e-5);

  // Import into a new run: every parameter bit-identical (wte's padding rows, which HF does
  // not store, come back as zeros).
  const ImportResult imp = import_model(out, tmp.str() + "/imported", parse_config("{}", "<defaults>"));
  CHECK(imp.source_kind == "hf");
  CHECK(imp.checkpoint_dir == tmp.str() + "/imported/checkpoints/step_00000000");
  const auto back = params_of(imp.checkpoint_dir);
  REQUIRE(back.size() == ours.size());
  for (const auto& [name, t] : ours) {
    INFO(name);
    std::vector<float> expect = t.data;
    if (name == "wte") std::fill(expect.begin() + 100 * 32, expect.end(), 0.0f);
    CHECK(back.at(name).shape == t.shape);
    CHECK(same_bits(back.at(name).data, expect));
  }
  // The imported checkpoint resumes like a training one: step 0, zero moments, same shape.
  const Config icfg = imp.config;
  CHECK(icfg.model.d_model == 32);
  CHECK(icfg.moe.n_experts == 0);
  auto be = make_backend("cpu", 2);
  GPT2 model(*be, model_shape(icfg), model_init(icfg), 1, 1, model_moe(icfg));
  AdamW opt(*be, model.params(), AdamWOptions{});
  const TrainState st = load_run_checkpoint(Checkpoint(imp.checkpoint_dir), icfg, model, opt, *be);
  CHECK(st.step == 0);
  CHECK(opt.t() == 0);
  std::vector<float> m, v;
  opt.export_moments(m, v);
  CHECK(std::all_of(m.begin(), m.end(), [](float x) { return x == 0.0f; }));
  CHECK(std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; }));
  // A run directory that already has checkpoints is refused.
  CHECK(error_of([&] { import_model(out, tmp.str() + "/imported", parse_config("{}", "<defaults>")); })
            .find("already holds checkpoints") != std::string::npos);
  // An HF directory with a tensor GPT-2 does not have is refused, naming it.
  fs::create_directories(tmp.str() + "/odd");
  fs::copy_file(out + "/config.json", tmp.str() + "/odd/config.json");
  std::vector<NamedTensor> views;
  for (const auto& [name, t] : hf.tensors) views.push_back({name, t.shape, t.data.data()});
  const float extra = 1.0f;
  views.push_back({"h.0.attn.rotary", {1}, &extra});
  write_safetensors(tmp.str() + "/odd/model.safetensors", views);
  CHECK(error_of([&] { import_model(tmp.str() + "/odd", tmp.str() + "/odd-run", parse_config("{}", "x")); })
            .find("unexpected tensor 'h.0.attn.rotary'") != std::string::npos);
}

TEST_CASE("export safetensors of an MoE model reads back bit-exact and hf refuses MoE", "[export]") {
  TempDir tmp("export-moe");
  const Config cfg = tiny_config(tmp.str() + "/run", "moe: {n_experts: 4, top_k: 2, router: softmax_topk, shared_experts: 1, layers: \"1\"}");
  const std::string ckpt = save_checkpoint(cfg);
  const std::string e = error_of([&] { export_checkpoint(ckpt, ExportFormat::HuggingFace, tmp.str() + "/hf"); });
  CHECK(e.find("MoE") != std::string::npos);
  CHECK(e.find(ckpt) != std::string::npos);
  try {
    export_checkpoint(ckpt, ExportFormat::HuggingFace, tmp.str() + "/hf");
  } catch (const Error& err) {
    CHECK(std::string(err.hint()).find("--format safetensors") != std::string::npos);
  }

  const std::string out = tmp.str() + "/st";
  export_checkpoint(ckpt, ExportFormat::Safetensors, out);
  const SafetensorsFile f = read_safetensors(out + "/model.safetensors");
  const auto ours = params_of(ckpt);
  REQUIRE(f.tensors.size() == ours.size());
  for (const auto& [name, t] : ours) {
    INFO(name);
    REQUIRE(f.tensors.count(name));
    CHECK(f.tensors.at(name).shape == t.shape);
    CHECK(same_bits(f.tensors.at(name).data, t.data));
  }
  const int64_t H = cfg.moe.expert_hidden > 0 ? cfg.moe.expert_hidden : 0;
  const auto& fc = f.tensors.at("blocks.1.moe.experts.fc.weight").shape;  // experts stacked on dim 0
  CHECK(fc.size() == 3);
  CHECK(fc[0] == 4);
  CHECK(fc[2] == 32);
  CHECK((H == 0 || fc[1] == H));
  CHECK(f.tensors.count("blocks.0.mlp.fc.weight") == 1);  // block 0 stays dense
  CHECK(f.metadata.at("format") == "competelm");
  const JsonValue config = parse_json(read_bytes(out + "/config.json"), "config.json");
  CHECK(config.at("model").at("padded_vocab_size").as_int64() == 128);
  CHECK(config.at("moe").at("n_experts").as_int64() == 4);
  CHECK(config.at("moe").at("expert_hidden").as_int64() == fc[1]);
  const Config back = parse_config(read_bytes(out + "/config.yaml"), "config.yaml");
  CHECK(back.moe.n_experts == 4);
  CHECK(back.moe.shared_experts == 1);
}

namespace {

// Writes an llm.c checkpoint with random contents in llm.c's order; returns each llm.c
// tensor's values as read back (fp32, or the bf16 values widened) for the expectations.
std::vector<std::vector<float>> write_llmc(const std::string& path, int version, int maxT, int V, int Vp, int L, int NH,
                                           int C) {
  const int64_t sizes[16] = {int64_t(Vp) * C, int64_t(maxT) * C, L * C, L * C, L * 3 * C * C, L * 3 * C, L * C * C,
                             L * C, L * C, L * C, L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C, C, C};
  int32_t header[256] = {};
  header[0] = 20240326, header[1] = version, header[2] = maxT, header[3] = V, header[4] = L, header[5] = NH;
  header[6] = C, header[7] = Vp;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header), sizeof(header));
  Rng rng(static_cast<uint64_t>(version));
  std::vector<std::vector<float>> values;
  for (int64_t n : sizes) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) {
      x = rng.normal();
      if (version == 5) {
        uint32_t bits;
        std::memcpy(&bits, &x, 4);
        const uint16_t hi = uint16_t(bits >> 16);
        out.write(reinterpret_cast<const char*>(&hi), 2);
        bits = uint32_t(hi) << 16;  // the value a bf16 reader must produce
        std::memcpy(&x, &bits, 4);
      } else {
        out.write(reinterpret_cast<const char*>(&x), 4);
      }
    }
    values.push_back(std::move(v));
  }
  return values;
}

void check_llmc_import(int version, int Vp_file) {
  TempDir tmp("llmc");
  const int maxT = 16, V = 100, L = 2, NH = 4, C = 32;
  const std::string bin = tmp.str() + "/gpt2_tiny.bin";
  const auto vals = write_llmc(bin, version, maxT, V, Vp_file, L, NH, C);
  const ImportResult r = import_model(bin, tmp.str() + "/run", parse_config("{}", "<defaults>"));
  CHECK(r.source_kind == (version == 3 ? "llm.c v3 (fp32)" : "llm.c v5 (bf16)"));
  CHECK(r.shape.seq_len == maxT);
  CHECK(r.shape.vocab_size == V);
  const auto got = params_of(r.checkpoint_dir);
  auto slice = [&](int k, int l) {  // llm.c tensor k, layer l's part
    const size_t per = vals[k].size() / (k >= 2 && k < 14 ? L : 1);
    return std::vector<float>(vals[k].begin() + std::ptrdiff_t(per * l), vals[k].begin() + std::ptrdiff_t(per * (l + 1)));
  };
  std::vector<float> wte(size_t(128) * C, 0.0f);  // ours is padded to 128 rows
  std::copy(vals[0].begin(), vals[0].begin() + V * C, wte.begin());
  if (Vp_file == 128) wte = vals[0];
  CHECK(same_bits(got.at("wte").data, wte));
  CHECK(same_bits(got.at("wpe").data, vals[1]));
  const char* names[12] = {"ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                           "attn.proj.bias", "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias",
                           "mlp.proj.weight", "mlp.proj.bias"};
  for (int l = 0; l < L; l++)
    for (int k = 0; k < 12; k++) {
      INFO("blocks." << l << "." << names[k]);
      CHECK(same_bits(got.at("blocks." + std::to_string(l) + "." + names[k]).data, slice(2 + k, l)));
    }
  CHECK(same_bits(got.at("lnf.weight").data, vals[14]));
  CHECK(same_bits(got.at("lnf.bias").data, vals[15]));
}

}  // namespace

TEST_CASE("llm.c checkpoints (v3 fp32 and v5 bf16) import to the expected tensors", "[export]") {
  SECTION("v3 fp32, Vp 128 as llm.c pads") { check_llmc_import(3, 128); }
  SECTION("v5 bf16, unpadded vocabulary") { check_llmc_import(5, 100); }
  SECTION("bad files are refused naming the file") {
    TempDir tmp("llmc-bad");
    const std::string bin = tmp.str() + "/x.bin";
    write_llmc(bin, 3, 16, 100, 128, 2, 4, 32);
    const std::string bytes = read_bytes(bin);
    write_bytes(bin, bytes.substr(0, bytes.size() - 4));
    std::string e = error_of([&] { import_model(bin, tmp.str() + "/run", parse_config("{}", "x")); });
    CHECK(e.find(bin) != std::string::npos);
    CHECK(e.find("needs") != std::string::npos);
    std::string v4 = bytes;
    v4[4] = 4;  // version 4
    write_bytes(bin, v4);
    e = error_of([&] { import_model(bin, tmp.str() + "/run", parse_config("{}", "x")); });
    CHECK(e.find("version 4") != std::string::npos);
    write_bytes(bin, "not a checkpoint at all, just text");
    e = error_of([&] { import_model(bin, tmp.str() + "/run", parse_config("{}", "x")); });
    CHECK(e.find("neither a directory nor an llm.c checkpoint") != std::string::npos);
  }
}

TEST_CASE("hf export matches an independent PyTorch GPT-2 (tests/reference/hf_logits.py)", "[export][reference]") {
  TempDir tmp("hf-logits");
  const Config cfg = tiny_config(tmp.str() + "/run");
  const std::string ckpt = save_checkpoint(cfg);
  export_checkpoint(ckpt, ExportFormat::HuggingFace, tmp.str() + "/hf");
  SavedModel sm = load_saved_model(ckpt, 1, 0);
  const int T = 16, V = 100, Vp = 128;
  Rng rng(9);
  std::vector<int32_t> tokens(T);
  for (auto& t : tokens) t = int32_t(rng.below(V));
  sm.model->forward(tokens.data(), nullptr, 1, T);
  const std::vector<float> logits = sm.model->logits_host();
  std::vector<float> tok_f(tokens.begin(), tokens.end()), lg(size_t(T) * V);
  for (int t = 0; t < T; t++) std::copy(logits.begin() + t * Vp, logits.begin() + t * Vp + V, lg.begin() + t * V);
  const std::string expected = tmp.str() + "/expected.safetensors";
  write_safetensors(expected, {{"tokens", {T}, tok_f.data()}, {"logits", {T, V}, lg.data()}});
  const std::string cmd = fmt::format("{} {}/tests/reference/hf_logits.py --model '{}' --expected '{}'",
                                      COMPETELM_PYTHON, COMPETELM_SOURCE_DIR, tmp.str() + "/hf", expected);
  INFO("reference command: " << cmd);
  const int status = std::system(cmd.c_str());
  const int code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  if (code == 3) FAIL("PyTorch is not importable by " COMPETELM_PYTHON " (a test dependency): install python3-torch");
  CHECK(code == 0);
}
