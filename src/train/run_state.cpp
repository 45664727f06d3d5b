#include "train/run_state.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.hpp"
#include "core/error.hpp"

namespace competelm {
namespace {

constexpr const char* kModelFile = "model.bin";
constexpr const char* kOptimFile = "optim.bin";
constexpr const char* kStateFile = "state.txt";
constexpr const char* kConfigFile = "config.yaml";
constexpr const char* kScheduleFile = "competition_schedule.txt";

// Doubles as hex floats so the restored value is bit-identical.
std::string hexd(double x) { return fmt::format("{:a}", x); }

std::string state_to_text(const TrainState& s, int64_t adam_t) {
  std::string out = "# competelm training state (key value); doubles in hex for exact resume\n";
  out += fmt::format("step {}\n", s.step);
  out += fmt::format("adam_t {}\n", adam_t);
  out += fmt::format("tokens_seen {}\n", s.tokens_seen);
  out += fmt::format("loader.epoch {}\n", s.train_loader.epoch);
  out += fmt::format("loader.shard_pos {}\n", s.train_loader.shard_pos);
  out += fmt::format("loader.sample_pos {}\n", s.train_loader.sample_pos);
  out += fmt::format("loss_ema {}\n", hexd(s.loss_ema));
  out += fmt::format("loss_ema_count {}\n", s.loss_ema_count);
  out += fmt::format("last_loss {}\n", hexd(s.last_loss));
  out += fmt::format("last_val_loss {}\n", hexd(s.last_val_loss));
  return out;
}

std::map<std::string, std::string> parse_kv(const std::string& text, const std::string& file) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.find(' ');
    if (sp == std::string::npos) fail("{}:{}: malformed line '{}' (expected 'key value')", file, lineno, line);
    kv[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return kv;
}

template <typename T>
T get_num(const std::map<std::string, std::string>& kv, const std::string& key, const std::string& file) {
  auto it = kv.find(key);
  if (it == kv.end()) fail("{}: missing key '{}'", file, key);
  const char* s = it->second.c_str();
  char* end = nullptr;
  T v{};
  if constexpr (std::is_floating_point_v<T>) v = std::strtod(s, &end);
  else if constexpr (std::is_signed_v<T>) v = static_cast<T>(std::strtoll(s, &end, 10));
  else v = static_cast<T>(std::strtoull(s, &end, 10));
  if (end == s || *end != '\0') fail("{}: key '{}' has a bad value '{}'", file, key, it->second);
  return v;
}

std::vector<NamedTensor> tensors_of(const TensorTable& table, const std::vector<float>& host,
                                    const std::string& prefix) {
  std::vector<NamedTensor> out;
  for (const TensorSpec& s : table.specs())
    out.push_back({prefix + s.name, s.shape, host.data() + s.offset});
  return out;
}

std::vector<float> download_all(Backend& be, const float* dev, size_t n) {
  std::vector<float> host(n);
  be.download(host.data(), dev, n * sizeof(float));
  return host;
}

// The canonical (whole-model) host buffer of `table` from `loaded` (by prefix + name).
std::vector<float> read_canonical(const std::map<std::string, LoadedTensor>& loaded, const TensorTable& table,
                                  const std::string& prefix, const std::string& file) {
  std::vector<float> host(table.total_elements(), 0.0f);
  for (const TensorSpec& s : table.specs()) {
    auto it = loaded.find(prefix + s.name);
    if (it == loaded.end()) fail("{}: tensor '{}' is missing", file, prefix + s.name);
    if (it->second.shape != s.shape)
      fail_hint("the checkpoint was written by a model of another shape; check the model section of the config",
                "{}: tensor '{}' has shape {} but the model expects {}", file, prefix + s.name,
                shape_str(it->second.shape), shape_str(s.shape));
    std::memcpy(host.data() + s.offset, it->second.data.data(), s.numel * sizeof(float));
  }
  return host;
}

void check_same_model(const Config& ckpt_cfg, const Config& cfg, const std::string& dir) {
  auto check = [&](const char* key, long a, long b) {
    if (a != b)
      fail_hint("resume with the config the run was started with, or start a new run.dir",
                "{}: checkpoint has {} = {} but the config says {}", dir, key, a, b);
  };
  check("model.n_layer", ckpt_cfg.model.n_layer, cfg.model.n_layer);
  check("model.d_model", ckpt_cfg.model.d_model, cfg.model.d_model);
  check("model.n_head", ckpt_cfg.model.n_head, cfg.model.n_head);
  check("model.seq_len", ckpt_cfg.model.seq_len, cfg.model.seq_len);
  check("model.vocab_size", ckpt_cfg.model.vocab_size, cfg.model.vocab_size);
}

}  // namespace

std::string save_run_checkpoint(const std::string& run_dir, const Config& cfg, GPT2& model,
                                AdamW& opt, const TrainState& state, Backend& backend,
                                const CompetitionSchedule* schedule, DataParallel* dp,
                                const DistContext* dist) {
  // Every tensor by its global identity: this rank's parameters and moment shards are gathered
  // into the whole model's layout (collectives: every rank calls this), rank 0 writes.
  const size_t n = model.params().total_elements();
  const std::vector<float> params = model.to_canonical(download_all(backend, model.param_buffer(), n));
  std::vector<float> m, v;
  opt.export_moments(m, v);
  if (dp) {
    dp->gather_host(m.data());
    dp->gather_host(v.data());
  }
  m = model.to_canonical(m);
  v = model.to_canonical(v);
  std::string dir;
  // A failed write (disk full) on rank 0 must not leave the other ranks waiting in the
  // broadcast below: rank 0 sends the error instead of the directory and every rank throws
  // it, so all of them take the same checkpoint.on_error decision.
  constexpr std::string_view kFailed = "\x01checkpoint write failed: ";
  if (!dist || dist->info.is_main()) try {
    const TensorTable& table = model.canonical_params();
    CheckpointWriter w(run_dir, state.step);
    w.write_tensors(kModelFile, tensors_of(table, params, ""));
    std::vector<NamedTensor> moments = tensors_of(table, m, "m.");
    for (auto& t : tensors_of(table, v, "v.")) moments.push_back(t);
    w.write_tensors(kOptimFile, moments);
    w.write_text(kStateFile, state_to_text(state, opt.t()));
    w.write_text(kConfigFile, to_yaml(cfg));
    if (schedule) w.write_text(kScheduleFile, schedule->serialize());
    std::string extra = fmt::format("\"loss\": {}, \"tokens_seen\": {}, \"parameters\": {}",
                                    std::isfinite(state.last_loss) ? fmt::format("{}", state.last_loss) : "null",
                                    state.tokens_seen, model.num_parameters());
    if (state.last_val_loss >= 0) extra += fmt::format(", \"val_loss\": {}", state.last_val_loss);
    if (dist) extra += fmt::format(", \"ranks\": {}, \"expert_parallel\": {}", dist->info.world, dist->ep_size);
    dir = w.commit(extra);
  } catch (const Error& e) {
    if (!dist) throw;
    dir = std::string(kFailed) + e.what();
  }
  // The commit (rename by rank 0) is the checkpoint's completion for every rank.
  if (dist) dir = dist->world->broadcast_string(dir, 0);
  if (dir.rfind(kFailed, 0) == 0) throw Error(dir.substr(kFailed.size()));
  return dir;
}

TrainState load_run_checkpoint(const Checkpoint& ck, const Config& cfg, GPT2& model, AdamW& opt,
                               Backend& backend, CompetitionSchedule* schedule) {
  const std::string& dir = ck.dir();
  const Config ckpt_cfg = parse_config(ck.read_text(kConfigFile), dir + "/" + kConfigFile);
  check_same_model(ckpt_cfg, cfg, dir);

  // Whole-model tensors in; this rank takes its experts and its moment shards.
  const TensorTable& table = model.canonical_params();
  const std::vector<float> params =
      model.from_canonical(read_canonical(ck.read_tensors(kModelFile), table, "", dir + "/" + kModelFile));
  backend.upload(model.param_buffer(), params.data(), params.size() * sizeof(float));
  const auto moments = ck.read_tensors(kOptimFile);
  opt.import_moments(model.from_canonical(read_canonical(moments, table, "m.", dir + "/" + kOptimFile)),
                     model.from_canonical(read_canonical(moments, table, "v.", dir + "/" + kOptimFile)));

  const std::string sfile = dir + "/" + kStateFile;
  const auto kv = parse_kv(ck.read_text(kStateFile), sfile);
  TrainState s;
  s.step = get_num<int64_t>(kv, "step", sfile);
  opt.set_t(get_num<int64_t>(kv, "adam_t", sfile));
  s.tokens_seen = get_num<uint64_t>(kv, "tokens_seen", sfile);
  s.train_loader.epoch = get_num<uint64_t>(kv, "loader.epoch", sfile);
  s.train_loader.shard_pos = get_num<uint64_t>(kv, "loader.shard_pos", sfile);
  s.train_loader.sample_pos = get_num<uint64_t>(kv, "loader.sample_pos", sfile);
  s.loss_ema = get_num<double>(kv, "loss_ema", sfile);
  s.loss_ema_count = get_num<int64_t>(kv, "loss_ema_count", sfile);
  s.last_loss = get_num<double>(kv, "last_loss", sfile);
  s.last_val_loss = get_num<double>(kv, "last_val_loss", sfile);
  if (s.step != ck.step()) fail("{}: state says step {} but the directory is for step {}", sfile, s.step, ck.step());
  if (schedule) {
    if (!ck.has_file(kScheduleFile))
      fail("{}: no {} (the checkpoint was not written by a CompeteSMoE run)", dir, kScheduleFile);
    *schedule = CompetitionSchedule::parse(ck.read_text(kScheduleFile), dir + "/" + kScheduleFile);
  }
  return s;
}

std::optional<Checkpoint> find_resume_checkpoint(const std::string& run_dir, bool fallback) {
  const std::vector<std::string> all = list_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return Checkpoint(*it);  // verified once, here; loading reads it without re-verifying
    } catch (const Error& e) {
      if (!fallback)
        fail_hint("set checkpoint.fallback: true (or --set checkpoint.fallback=true) to resume from the "
                  "next older checkpoint instead",
                  "newest checkpoint {} is unusable: {}", *it, e.what());
      spdlog::warn("checkpoint {} is unusable ({}); falling back to an older one", *it, e.what());
    }
  }
  return std::nullopt;
}

}  // namespace competelm
