#include "train/run_state.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
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

// Every tensor of the canonical `table` (by prefix + name) is in `index` with the model's shape.
void check_canonical(const TensorKindIndex& index, const TensorTable& table, const std::string& prefix,
                     const std::string& file) {
  for (const TensorSpec& s : table.specs()) {
    auto it = index.tensors.find(prefix + s.name);
    if (it == index.tensors.end()) fail("{}: tensor '{}' is missing", file, prefix + s.name);
    if (it->second.shape != s.shape)
      fail_hint("the checkpoint was written by a model of another shape; check the model section of the config",
                "{}: tensor '{}' has shape {} but the model expects {}", file, prefix + s.name,
                shape_str(it->second.shape), shape_str(s.shape));
  }
}

// The requests that fill elements [lo, hi) of this rank's flat buffer `local` (params() layout)
// from the canonical tensors (prefix + name): each local piece maps to its canonical tensor at
// model.canonical_offset (experts: this rank's slice). Alignment gaps are left alone.
void request_local_range(const GPT2& model, size_t lo, size_t hi, const std::string& prefix, float* local,
                         std::vector<TensorRangeRequest>& out) {
  for (const TensorSpec& s : model.params().specs()) {
    const size_t a = std::max(lo, s.offset), b = std::min(hi, s.offset + s.numel);
    if (a >= b) continue;
    const uint64_t begin = model.canonical_offset(s) + (a - s.offset);
    out.push_back({prefix + s.name, begin, begin + (b - a), local + a});
  }
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

namespace {

// meta.json's extra fields: what `competelm-inspect` and humans look at first.
std::string meta_extra(const GPT2& model, const TrainState& state, const DistContext* dist) {
  std::string extra = fmt::format("\"loss\": {}, \"tokens_seen\": {}, \"parameters\": {}",
                                  std::isfinite(state.last_loss) ? fmt::format("{}", state.last_loss) : "null",
                                  state.tokens_seen, model.num_parameters());
  if (state.last_val_loss >= 0) extra += fmt::format(", \"val_loss\": {}", state.last_val_loss);
  if (dist) extra += fmt::format(", \"ranks\": {}, \"expert_parallel\": {}", dist->info.world, dist->ep_size);
  return extra;
}

// The small files every checkpoint has (written by one process: rank 0).
void write_run_files(CheckpointWriter& w, const Config& cfg, const AdamW& opt, const TrainState& state,
                     const CompetitionSchedule* schedule) {
  w.write_text(kStateFile, state_to_text(state, opt.t()));
  w.write_text(kConfigFile, to_yaml(cfg));
  if (schedule) w.write_text(kScheduleFile, schedule->serialize());
}

// This rank's shard of a multi-rank checkpoint: its ZeRO-1 owned ranges of the parameters
// and of both moments, each piece stored by global identity (canonical name, global shape,
// element range of the canonical tensor). The owned ranges of all ranks cover every
// parameter exactly once (replicated region: sharded over W; experts: over the W/P holders).
void write_rank_shards(CheckpointWriter& w, GPT2& model, const AdamW& opt, Backend& backend,
                       const std::vector<ParamRange>& owned, int rank, int world) {
  struct Piece {
    const TensorSpec* spec;
    size_t lo, hi;  // of the local flat buffer
  };
  std::vector<Piece> pieces;
  size_t elements = 0;
  for (const ParamRange& r : owned)
    for (const TensorSpec& s : model.params().specs()) {
      const size_t lo = std::max(r.begin, s.offset), hi = std::min(r.end, s.offset + s.numel);
      if (lo < hi) {
        pieces.push_back({&s, lo, hi});
        elements += hi - lo;
      }
    }
  std::vector<float> params(elements);  // (owned elements) this rank's pieces, back to back
  size_t at = 0;
  for (const Piece& p : pieces) {
    backend.download(params.data() + at, model.param_buffer() + p.lo, (p.hi - p.lo) * sizeof(float));
    at += p.hi - p.lo;
  }
  std::vector<float> m, v;  // local layout; only the owned ranges hold moments
  opt.export_moments(m, v);
  auto named = [&](const std::string& prefix, const float* base, bool packed) {
    std::vector<NamedTensor> out;
    size_t cursor = 0;
    for (const Piece& p : pieces) {
      const TensorSpec& canon = model.canonical_params().at(p.spec->name);
      const int64_t begin = int64_t(model.canonical_offset(*p.spec) + (p.lo - p.spec->offset));
      out.push_back({prefix + p.spec->name, canon.shape, packed ? base + cursor : base + p.lo, begin,
                     begin + int64_t(p.hi - p.lo)});
      cursor += p.hi - p.lo;
    }
    return out;
  };
  w.write_tensors(shard_file_name("model", rank, world), named("", params.data(), true));
  std::vector<NamedTensor> moments = named("m.", m.data(), false);
  for (auto& t : named("v.", v.data(), false)) moments.push_back(t);
  w.write_tensors(shard_file_name("optim", rank, world), moments);
}

// "name bytes checksum" lines, and back.
std::string files_to_text(const std::vector<CheckpointFile>& files) {
  std::string out;
  for (const CheckpointFile& f : files) out += fmt::format("{} {} {}\n", f.name, f.bytes, f.checksum);
  return out;
}

std::vector<CheckpointFile> files_from_text(const std::string& text) {
  std::vector<CheckpointFile> files;
  std::istringstream in(text);
  CheckpointFile f;
  while (in >> f.name >> f.bytes >> f.checksum) files.push_back(f);
  return files;
}

// Every rank's string, on every rank (rank order).
std::vector<std::string> allgather_strings(Comm& comm, const std::string& mine) {
  const int n = comm.size();
  int64_t len = int64_t(mine.size());
  std::vector<int64_t> lens(size_t(n), 0);
  comm.allgather(&len, lens.data(), sizeof(len));
  const size_t block = size_t(*std::max_element(lens.begin(), lens.end()));
  std::string send = mine;
  send.resize(block, '\0');
  std::string recv(block * size_t(n), '\0');
  if (block > 0) comm.allgather(send.data(), recv.data(), block);
  std::vector<std::string> out;
  for (int r = 0; r < n; ++r) out.push_back(recv.substr(size_t(r) * block, size_t(lens[size_t(r)])));
  return out;
}

// Collective: true on every rank when `error` is non-empty on any; `error` then holds the
// message of the lowest failing rank, on every rank ("rank R: " prefixed when there are several),
// and `hint` (if given) that rank's hint.
bool any_rank_failed(Comm& comm, std::string& error, std::string* hint = nullptr) {
  const int n = comm.size();
  const int from_top = comm.allreduce_max(error.empty() ? 0 : n - comm.rank());
  if (from_top == 0) return false;
  const int root = n - from_top;
  std::string msg = error;
  if (n > 1 && comm.rank() == root && msg.rfind("rank ", 0) != 0) msg = fmt::format("rank {}: {}", root, msg);
  error = comm.broadcast_string(msg, root);
  if (hint) *hint = comm.broadcast_string(*hint, root);
  return true;
}

// The multi-rank save (W > 1): see the commit protocol at the top of checkpoint.cpp.
std::string save_sharded(const std::string& run_dir, const Config& cfg, GPT2& model, AdamW& opt,
                         const TrainState& state, Backend& backend, const CompetitionSchedule* schedule,
                         DataParallel& dp, const DistContext& dist) {
  Comm& comm = *dist.world;
  const int rank = dist.info.rank, world = dist.info.world;
  std::string error;
  // 1. Rank 0 creates the temporary directory; every rank learns its path (or the error).
  std::unique_ptr<CheckpointWriter> owner, helper;
  std::string tmp_dir;
  if (rank == 0) try {
      owner = std::make_unique<CheckpointWriter>(run_dir, state.step);
      tmp_dir = owner->temporary_dir();
    } catch (const std::exception& e) {  // bad_alloc too: no rank may skip the agreement below
      error = e.what();
    }
  if (any_rank_failed(comm, error)) throw Error(error);
  tmp_dir = comm.broadcast_string(tmp_dir, 0);
  // 2. Every rank writes and fsyncs its shards; a failure anywhere fails all (rank 0's writer,
  // going out of scope uncommitted, removes the directory once every rank has stopped).
  std::vector<CheckpointFile> mine;
  try {
    CheckpointWriter* w = owner.get();
    if (!w) w = (helper = std::make_unique<CheckpointWriter>(tmp_dir, state.step, true)).get();
    write_rank_shards(*w, model, opt, backend, dp.owned(), rank, world);
    if (helper) mine = helper->written();
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (any_rank_failed(comm, error)) throw Error(error);
  // 3. Rank 0 records the others' files, writes the run files and commits (meta.json last).
  const std::vector<std::string> records = allgather_strings(comm, files_to_text(mine));
  std::string dir;
  if (rank == 0) try {
      for (int r = 1; r < world; ++r) owner->add_files(files_from_text(records[size_t(r)]));
      write_run_files(*owner, cfg, opt, state, schedule);
      dir = owner->commit(meta_extra(model, state, &dist));
    } catch (const std::exception& e) {
      error = e.what();
    }
  owner.reset();  // an uncommitted directory is gone before any rank reports the failure
  if (any_rank_failed(comm, error)) throw Error(error);
  return comm.broadcast_string(dir, 0);
}

}  // namespace

std::string save_run_checkpoint(const std::string& run_dir, const Config& cfg, GPT2& model,
                                AdamW& opt, const TrainState& state, Backend& backend,
                                const CompetitionSchedule* schedule, DataParallel* dp,
                                const DistContext* dist) {
  if (dist && dist->info.world > 1) {
    CLM_ASSERT(dp != nullptr);
    return save_sharded(run_dir, cfg, model, opt, state, backend, schedule, *dp, *dist);
  }
  // One process: whole tensors in model.bin / optim.bin.
  const size_t n = model.params().total_elements();
  const std::vector<float> params = model.to_canonical(download_all(backend, model.param_buffer(), n));
  std::vector<float> m, v;
  opt.export_moments(m, v);
  m = model.to_canonical(m);
  v = model.to_canonical(v);
  const TensorTable& table = model.canonical_params();
  CheckpointWriter w(run_dir, state.step);
  w.write_tensors(kModelFile, tensors_of(table, params, ""));
  std::vector<NamedTensor> moments = tensors_of(table, m, "m.");
  for (auto& t : tensors_of(table, v, "v.")) moments.push_back(t);
  w.write_tensors(kOptimFile, moments);
  write_run_files(w, cfg, opt, state, schedule);
  return w.commit(meta_extra(model, state, dist));
}

TrainState load_run_checkpoint(const Checkpoint& ck, const Config& cfg, GPT2& model, AdamW& opt,
                               Backend& backend, CompetitionSchedule* schedule) {
  const std::string& dir = ck.dir();
  const Config ckpt_cfg = parse_config(ck.read_text(kConfigFile), dir + "/" + kConfigFile);
  check_same_model(ckpt_cfg, cfg, dir);

  // Only what this rank holds: every local tensor (the replicated ones whole, its experts'
  // slices) and the moments of its owned ranges; the rest of the files is never read.
  const TensorTable& table = model.canonical_params();
  const size_t n = model.params().total_elements();
  const TensorKindIndex model_index = ck.read_index("model");
  check_canonical(model_index, table, "", dir + "/model");
  std::vector<float> params(n, 0.0f);  // (local layout)
  std::vector<TensorRangeRequest> wanted;
  request_local_range(model, 0, n, "", params.data(), wanted);
  ck.read_ranges(model_index, wanted);
  backend.upload(model.param_buffer(), params.data(), params.size() * sizeof(float));

  const TensorKindIndex optim_index = ck.read_index("optim");
  check_canonical(optim_index, table, "m.", dir + "/optim");
  check_canonical(optim_index, table, "v.", dir + "/optim");
  std::vector<float> m(n, 0.0f), v(n, 0.0f);  // (local layout) import reads the owned ranges
  wanted.clear();
  for (const ParamRange& r : opt.owned()) {
    request_local_range(model, r.begin, r.end, "m.", m.data(), wanted);
    request_local_range(model, r.begin, r.end, "v.", v.data(), wanted);
  }
  ck.read_ranges(optim_index, wanted);
  opt.import_moments(m, v);

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

namespace {

// This rank's share of `dir`'s verification; "" or the error (and its hint).
std::string verify_share(const std::string& dir, Comm& world, std::optional<Checkpoint>& out, std::string& hint) {
  hint.clear();
  try {
    out.emplace(dir, Checkpoint::Verify::none);
    out->verify_files(out->verification_share(world.rank(), world.size()));
    return {};
  } catch (const Error& e) {
    out.reset();
    hint = e.hint();
    return e.what();
  } catch (const std::exception& e) {  // bad_alloc too: no rank may skip the agreement
    out.reset();
    return e.what();
  }
}

}  // namespace

Checkpoint open_verified_checkpoint(const std::string& dir, Comm& world) {
  std::optional<Checkpoint> ck;
  std::string hint;
  std::string error = verify_share(dir, world, ck, hint);
  if (any_rank_failed(world, error, &hint)) throw Error(error, hint);
  return std::move(*ck);
}

std::optional<Checkpoint> find_resume_checkpoint(const std::string& run_dir, bool fallback, Comm& world) {
  std::string error, listing;
  if (world.rank() == 0) try {
      for (const std::string& dir : list_checkpoints(run_dir)) listing += dir + "\n";
    } catch (const std::exception& e) {
      error = e.what();
    }
  if (any_rank_failed(world, error)) throw Error(error);
  listing = world.broadcast_string(listing, 0);
  std::vector<std::string> all;
  for (size_t at = 0, nl; (nl = listing.find('\n', at)) != std::string::npos; at = nl + 1)
    all.push_back(listing.substr(at, nl - at));
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::optional<Checkpoint> ck;
    std::string hint;  // the fallback hint below replaces the file's
    error = verify_share(*it, world, ck, hint);
    if (!any_rank_failed(world, error)) return ck;
    if (!fallback)
      fail_hint("set checkpoint.fallback: true (or --set checkpoint.fallback=true) to resume from the "
                "next older checkpoint instead",
                "newest checkpoint {} is unusable: {}", *it, error);
    if (world.rank() == 0) spdlog::warn("checkpoint {} is unusable ({}); falling back to an older one", *it, error);
  }
  return std::nullopt;
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
