#include "data/loader.hpp"

#include <spdlog/spdlog.h>

#include <climits>
#include <exception>
#include <initializer_list>
#include <numeric>
#include <utility>

#include "core/error.hpp"
#include "core/rng.hpp"

namespace competelm {

namespace {

// One seed from several integers; the leading tag keeps shard-order and sample-order
// streams apart even when their other parts coincide.
uint64_t derive_seed(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x6A09E667F3BCC909ull;
  for (uint64_t p : parts) {
    uint64_t x = h ^ p;
    h = splitmix64(x);
  }
  return h;
}

// 0..n-1, Fisher-Yates-shuffled with seed (or left in order when shuffle is off).
std::vector<uint32_t> permutation(size_t n, bool shuffle, uint64_t seed) {
  std::vector<uint32_t> p(n);
  std::iota(p.begin(), p.end(), 0u);
  if (shuffle && n > 1) {
    Rng rng(seed);
    for (size_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.below(i + 1)]);
  }
  return p;
}

// A micro-batch in flight: this rank's B×T inputs and targets, and the stream position
// just after its global micro-batch.
struct Batch {
  std::vector<int32_t> inputs;   // (B, T)
  std::vector<int32_t> targets;  // (B, T)
  LoaderState after;
};

}  // namespace

struct DataLoader::Impl {
  LoaderOptions opts;
  std::vector<ShardReader> readers;   // shards holding at least one sample, in file order
  std::vector<size_t> file_index;     // readers[i] is shards_[file_index[i]]
  std::vector<uint64_t> num_samples;  // samples in readers[i]
  uint64_t total_samples = 0;

  // The reading position. Owned by the prefetch thread when there is one, else by the
  // caller of next_batch. Invariant: shard_pos < readers.size() and sample_pos < the
  // sample count of that shard, i.e. it always names a real sample.
  struct Cursor {
    LoaderState pos;
    std::vector<uint32_t> shard_order;   // this epoch's order over readers
    std::vector<uint32_t> sample_order;  // order of samples in shard_order[pos.shard_pos]
    bool orders_valid = false;
  } cursor;
  std::vector<uint32_t> window;  // T+1 tokens of one sample

  // Shared between the caller and the prefetch thread, guarded by mu.
  mutable std::mutex mu;
  std::condition_variable cv;
  LoaderState next_state;       // position of the batch next_batch() returns next
  bool has_ready = false;       // ready holds a batch for generation `generation`
  Batch ready;                  // the finished half of the double buffer
  std::exception_ptr error;     // a failure of the prefetch thread, sticky until restore()
  uint64_t generation = 0;      // bumped by restore(): work begun before it is discarded
  bool seek_pending = false;    // the thread must move the cursor to seek_to first
  LoaderState seek_to;
  bool stop = false;
  std::thread worker;

  uint32_t shard_at(uint64_t epoch, uint64_t shard_pos) const {
    return permutation(readers.size(), opts.shuffle, derive_seed({1, opts.seed, epoch}))[shard_pos];
  }

  std::vector<uint32_t> sample_order_for(uint64_t epoch, uint32_t shard) const {
    return permutation(num_samples[shard], opts.shuffle, derive_seed({2, opts.seed, epoch, file_index[shard]}));
  }

  void seek(const LoaderState& s) {
    if (!cursor.orders_valid || cursor.pos.epoch != s.epoch)
      cursor.shard_order = permutation(readers.size(), opts.shuffle, derive_seed({1, opts.seed, s.epoch}));
    cursor.pos = s;
    cursor.sample_order = sample_order_for(s.epoch, cursor.shard_order[s.shard_pos]);
    cursor.orders_valid = true;
  }

  void advance() {
    LoaderState& p = cursor.pos;
    if (++p.sample_pos < num_samples[cursor.shard_order[p.shard_pos]]) return;
    p.sample_pos = 0;
    if (++p.shard_pos == readers.size()) {
      // End of the epoch: continue seamlessly into the next one.
      p.shard_pos = 0;
      ++p.epoch;
      cursor.shard_order = permutation(readers.size(), opts.shuffle, derive_seed({1, opts.seed, p.epoch}));
    }
    cursor.sample_order = sample_order_for(p.epoch, cursor.shard_order[p.shard_pos]);
  }

  // Reads the cursor's sample into row `row` of b, as (inputs, targets) = window shifted by one.
  void read_sample(Batch& b, int row) {
    const uint32_t shard = cursor.shard_order[cursor.pos.shard_pos];
    const uint64_t sample = cursor.sample_order[cursor.pos.sample_pos];
    const size_t T = static_cast<size_t>(opts.T);
    const uint64_t first = sample * T;
    readers[shard].read(first, T + 1, window.data());
    int32_t* in = b.inputs.data() + row * T;
    int32_t* tg = b.targets.data() + row * T;
    // Out-of-range ids are refused here, where the shard and position are known (the model
    // would refuse them too, but without saying which file they came from).
    const uint32_t limit = opts.vocab_size > 0 ? static_cast<uint32_t>(opts.vocab_size) - 1u
                                               : static_cast<uint32_t>(INT32_MAX);
    for (size_t t = 0; t <= T; ++t) {
      if (window[t] > limit)
        fail_hint("check that the shards were tokenized for this model's vocabulary",
                  "{}: token {} at position {} is outside {}", readers[shard].info().path, window[t], first + t,
                  opts.vocab_size > 0 ? fmt::format("the vocabulary [0, {})", opts.vocab_size)
                                      : std::string("the int32 token id range"));
    }
    for (size_t t = 0; t < T; ++t) {
      in[t] = static_cast<int32_t>(window[t]);
      tg[t] = static_cast<int32_t>(window[t + 1]);
    }
  }

  // Consumes one global micro-batch of world×B samples from the cursor, reading only
  // this rank's B of them into b. On failure the cursor is left mid-batch; callers re-seek.
  void fill(Batch& b) {
    const int B = opts.B;
    b.inputs.resize(static_cast<size_t>(B) * opts.T);
    b.targets.resize(static_cast<size_t>(B) * opts.T);
    const int lo = opts.rank * B, hi = lo + B;
    for (int g = 0; g < opts.world * B; ++g) {
      if (g >= lo && g < hi) read_sample(b, g - lo);
      advance();
    }
    b.after = cursor.pos;
  }

  // Prefetch thread: keeps one finished batch ready while the caller consumes the other.
  void run() {
    std::unique_lock lk(mu);
    Batch work;
    for (;;) {
      cv.wait(lk, [&] { return stop || seek_pending || (!has_ready && !error); });
      if (stop) return;
      if (seek_pending) {
        seek_pending = false;
        seek(seek_to);
      }
      if (has_ready || error) continue;
      const uint64_t gen = generation;
      lk.unlock();
      std::exception_ptr failure;
      try {
        fill(work);
      } catch (...) {
        failure = std::current_exception();
      }
      lk.lock();
      if (gen != generation) continue;  // restore() came in meanwhile; seek_pending is set
      if (failure) {
        error = failure;
        seek_pending = true;  // re-seek so a later restore()/retry starts from a clean cursor
        seek_to = next_state;
      } else {
        std::swap(work, ready);
        has_ready = true;
      }
      cv.notify_all();
    }
  }
};

DataLoader::DataLoader(const LoaderOptions& opts) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opts = opts;
  const std::string key = opts.config_key.empty() ? std::string("data") : opts.config_key;
  if (opts.B < 1) fail("{}: batch size B = {} (expected >= 1)", key, opts.B);
  if (opts.T < 1) fail("{}: sequence length T = {} (expected >= 1)", key, opts.T);
  if (opts.world < 1) fail("{}: world size {} (expected >= 1)", key, opts.world);
  if (opts.rank < 0 || opts.rank >= opts.world)
    fail("{}: rank {} is outside the world of {} ranks", key, opts.rank, opts.world);

  for (const std::string& path : expand_glob(opts.pattern, key)) shards_.push_back(read_shard_header(path));

  const uint64_t T = static_cast<uint64_t>(opts.T);
  for (size_t i = 0; i < shards_.size(); ++i) {
    const uint64_t n = shards_[i].num_tokens;
    const uint64_t samples = n == 0 ? 0 : (n - 1) / T;
    if (samples == 0) {
      spdlog::warn("{}: {} tokens, too few for one sample of T+1 = {} tokens; skipped", shards_[i].path, n, T + 1);
      continue;
    }
    // samples < 2^31: the header's count is an int32, so uint32 sample orders suffice.
    m.readers.emplace_back(shards_[i]);
    m.file_index.push_back(i);
    m.num_samples.push_back(samples);
    m.total_samples += samples;
  }
  if (m.readers.empty())
    fail_hint("use shorter sequences (smaller T) or larger shards",
              "{}: none of the {} shards matching '{}' holds T+1 = {} tokens, enough for one sample", key,
              shards_.size(), opts.pattern, T + 1);

  m.window.resize(T + 1);
  m.seek(LoaderState{});
  if (opts.prefetch) m.worker = std::thread([&m] { m.run(); });
}

DataLoader::~DataLoader() {
  if (impl_ && impl_->worker.joinable()) {
    {
      std::lock_guard lk(impl_->mu);
      impl_->stop = true;
    }
    impl_->cv.notify_all();
    impl_->worker.join();
  }
}

void DataLoader::next_batch(int32_t* inputs, int32_t* targets) {
  Impl& m = *impl_;
  const size_t n = static_cast<size_t>(m.opts.B) * m.opts.T;
  if (!m.opts.prefetch) {
    Batch b;
    try {
      m.fill(b);
    } catch (...) {
      m.seek(m.next_state);  // leave the position where it was: the batch was not delivered
      throw;
    }
    std::copy(b.inputs.begin(), b.inputs.end(), inputs);
    std::copy(b.targets.begin(), b.targets.end(), targets);
    std::lock_guard lk(m.mu);
    m.next_state = b.after;
    return;
  }
  std::unique_lock lk(m.mu);
  m.cv.wait(lk, [&] { return m.has_ready || m.error; });
  if (m.error) std::rethrow_exception(m.error);
  std::copy(m.ready.inputs.begin(), m.ready.inputs.begin() + n, inputs);
  std::copy(m.ready.targets.begin(), m.ready.targets.begin() + n, targets);
  m.next_state = m.ready.after;
  m.has_ready = false;
  m.cv.notify_all();
}

LoaderState DataLoader::state() const {
  std::lock_guard lk(impl_->mu);
  return impl_->next_state;
}

void DataLoader::restore(const LoaderState& s) {
  Impl& m = *impl_;
  const std::string key = m.opts.config_key.empty() ? std::string("data") : m.opts.config_key;
  // A position saved by state() always names a real sample; anything else means the data
  // (or T) changed since the checkpoint was written.
  if (s.shard_pos >= m.readers.size() || s.sample_pos >= m.num_samples[m.shard_at(s.epoch, s.shard_pos)])
    fail_hint("resume with the same data files and sequence length T as the checkpoint",
              "{}: loader position (epoch {}, shard {}, sample {}) does not exist in the {} shards matching '{}'",
              key, s.epoch, s.shard_pos, s.sample_pos, m.readers.size(), m.opts.pattern);
  std::lock_guard lk(m.mu);
  m.next_state = s;
  if (!m.opts.prefetch) {
    m.seek(s);
    return;
  }
  ++m.generation;
  m.seek_pending = true;
  m.seek_to = s;
  m.has_ready = false;
  m.error = nullptr;
  m.cv.notify_all();
}

uint64_t DataLoader::total_tokens() const {
  uint64_t n = 0;
  for (const ShardInfo& s : shards_) n += s.num_tokens;
  return n;
}

uint64_t DataLoader::samples_per_epoch() const { return impl_->total_samples; }

}  // namespace competelm
