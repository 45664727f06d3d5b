// Drawing, querying and (de)serialising the competition schedule (spec §5).
//
// Drawing: one uniform number per (step, MoE layer) pair after warm-up, in a fixed order
// (step-major, layers in order), from a competelm::Rng seeded by the run seed mixed with a
// constant of its own, so the table does not share a random stream with initialisation or
// data order. A hit is placed at its own step when that step is below the cap and does not
// already hold the layer (an earlier hit may have been moved there). Otherwise it moves to
// the nearest EARLIER step (≥ the warm-up end) with room that does not hold the layer, else
// to the nearest LATER such step, else it is dropped. Moving keeps the realised rate at the
// configured one while honouring the cap; earlier steps are preferred because their own
// draws are already done, so a move there does not crowd out future draws.
#include "moe/competition_schedule.hpp"

#include <charconv>
#include <cmath>
#include <string_view>
#include <system_error>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/rng.hpp"
#include "moe/schedule_draws.hpp"

namespace competelm {

namespace {

// Mixed into the run seed so the schedule's random stream is its own ("compete" in ASCII).
constexpr uint64_t kScheduleSeedSalt = 0x636f6d7065746531ull;

constexpr std::string_view kMagic = "competelm-competition-schedule";
constexpr std::string_view kVersion = "v1";
// Largest table parse() accepts (steps × layers bytes), so a damaged header cannot make it
// allocate gigabytes.
constexpr int64_t kMaxTableCells = int64_t{1} << 31;

void validate(const ScheduleOptions& o) {
  if (o.total_steps < 0) fail("competition schedule: total_steps must be ≥ 0, got {}", o.total_steps);
  if (o.n_moe_layers < 0)
    fail("competition schedule: n_moe_layers must be ≥ 0, got {}", o.n_moe_layers);
  if (!(o.rate >= 0.0f && o.rate <= 1.0f))
    fail("competition schedule: rate must be in [0, 1], got {}", o.rate);
  if (!(o.warmup >= 0.0f && o.warmup <= 1.0f))
    fail("competition schedule: warmup must be in [0, 1], got {}", o.warmup);
  if (o.max_layers_per_step < 1)
    fail("competition schedule: max_layers_per_step must be ≥ 1, got {}", o.max_layers_per_step);
  if (int64_t{o.total_steps} * o.n_moe_layers > kMaxTableCells)
    fail("competition schedule: {} steps × {} layers is too large a table", o.total_steps,
         o.n_moe_layers);
}

// Union-find over steps that skips the full ones: find(i) is the nearest open slot in one
// direction. Index 0 (earlier) or n (later) is the sentinel "no step left".
struct OpenSteps {
  std::vector<int> parent;
  explicit OpenSteps(int n) : parent(n + 1) {
    for (int i = 0; i <= n; ++i) parent[i] = i;
  }
  int find(int i) {
    while (parent[i] != i) {
      parent[i] = parent[parent[i]];  // path halving
      i = parent[i];
    }
    return i;
  }
};

struct Drawn {
  std::vector<uint8_t> table;  // (steps, layers) row-major
  ScheduleDrawStats stats;
};

Drawn draw(const ScheduleOptions& o) {
  validate(o);
  const int T = o.total_steps, L = o.n_moe_layers, cap = o.max_layers_per_step;
  Drawn d;
  d.table.assign(static_cast<size_t>(T) * L, 0);
  const int start = static_cast<int>(competition_warmup_end(o.warmup, T));
  d.stats.warmup_end = start;
  if (L == 0 || start >= T || o.rate <= 0.0f) return d;

  const int n = T - start;              // steps that may compete: start + i, i in [0, n)
  std::vector<int> count(n, 0);         // layers competing at each of them
  OpenSteps earlier(n);                 // index i + 1 ↔ step start + i; 0 = none
  OpenSteps later(n);                   // index i ↔ step start + i; n = none
  auto has = [&](int i, int l) { return d.table[static_cast<size_t>(start + i) * L + l] != 0; };
  auto place = [&](int i, int l) {
    d.table[static_cast<size_t>(start + i) * L + l] = 1;
    if (++count[i] == cap) {            // full: both searches skip it from now on
      earlier.parent[i + 1] = i;
      later.parent[i] = i + 1;
    }
  };

  uint64_t mix = o.seed ^ kScheduleSeedSalt;
  Rng rng(splitmix64(mix));
  const double rate = o.rate;
  for (int i = 0; i < n; ++i) {
    for (int l = 0; l < L; ++l) {
      if (!(rng.uniform_double() < rate)) continue;
      ++d.stats.hits;
      if (count[i] < cap && !has(i, l)) {
        place(i, l);
        ++d.stats.placed;
        continue;
      }
      int e = earlier.find(i);          // nearest open step before i (index i ↔ step i - 1)
      while (e != 0 && has(e - 1, l)) e = earlier.find(e - 1);
      if (e != 0) {
        place(e - 1, l);
        ++d.stats.moved_earlier;
        continue;
      }
      int f = later.find(i + 1);
      while (f != n && has(f, l)) f = later.find(f + 1);
      if (f != n) {
        place(f, l);
        ++d.stats.moved_later;
        continue;
      }
      ++d.stats.dropped;
    }
  }
  return d;
}

// A whole token as a non-negative integer of type T ("+", "-", "" and overflow refused).
template <typename T>
bool parse_uint(std::string_view s, T& out) {
  if (s.empty() || s.front() < '0' || s.front() > '9') return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    const size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

}  // namespace

int64_t competition_warmup_end(float warmup, int total_steps) {
  if (total_steps <= 0 || !(warmup > 0.0f)) return 0;
  if (warmup >= 1.0f) return total_steps;
  // The shortest fixed-point text that reads back as this float: the decimal the user wrote.
  char buf[128];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, warmup, std::chars_format::fixed);
  const std::string_view text(buf, ec == std::errc() ? end - buf : 0);
  const size_t dot = text.find('.');
  if (text.starts_with("0.") && text.size() - dot - 1 <= 9) {
    // warmup = digits / 10^d exactly; digits < 10^9 and total_steps < 2^31 fit in int64.
    int64_t digits = 0, scale = 1;
    for (char c : text.substr(dot + 1)) {
      digits = digits * 10 + (c - '0');
      scale *= 10;
    }
    return digits * total_steps / scale;
  }
  return static_cast<int64_t>(std::floor(static_cast<double>(warmup) * total_steps));
}

ScheduleDrawStats competition_schedule_draw_stats(const ScheduleOptions& opts) {
  return draw(opts).stats;
}

CompetitionSchedule CompetitionSchedule::build(const ScheduleOptions& opts) {
  Drawn d = draw(opts);
  CompetitionSchedule s;
  s.steps_ = opts.total_steps;
  s.layers_ = opts.n_moe_layers;
  s.table_ = std::move(d.table);
  return s;
}

// Steps or layers outside the table never compete (a run extended past the steps the table
// was drawn for trains on without competition).
bool CompetitionSchedule::competes(int64_t step, int moe_layer) const {
  if (step < 0 || step >= steps_ || moe_layer < 0 || moe_layer >= layers_) return false;
  return table_[static_cast<size_t>(step) * layers_ + moe_layer] != 0;
}

int CompetitionSchedule::layers_at(int64_t step) const {
  if (step < 0 || step >= steps_) return 0;
  int n = 0;
  for (int l = 0; l < layers_; ++l) n += table_[static_cast<size_t>(step) * layers_ + l];
  return n;
}

int64_t CompetitionSchedule::total() const {
  int64_t n = 0;
  for (uint8_t v : table_) n += v;
  return n;
}

// Format v1:
//   competelm-competition-schedule v1 steps=20000 layers=6 pairs=8403
//   57: 0 4
//   58: 2
// one line per step that has competing layers (ascending), its layers ascending.
std::string CompetitionSchedule::serialize() const {
  std::string out =
      fmt::format("{} {} steps={} layers={} pairs={}\n", kMagic, kVersion, steps_, layers_, total());
  for (int s = 0; s < steps_; ++s) {
    if (layers_at(s) == 0) continue;
    out += fmt::format("{}:", s);
    for (int l = 0; l < layers_; ++l)
      if (competes(s, l)) out += fmt::format(" {}", l);
    out += '\n';
  }
  return out;
}

CompetitionSchedule CompetitionSchedule::parse(const std::string& text, const std::string& source) {
  std::vector<std::string_view> lines = split(text, '\n');
  if (lines.size() > 1 && lines.back().empty()) lines.pop_back();  // the final newline

  // Header: magic, version, steps=, layers=, pairs= (single spaces, in this order).
  const std::vector<std::string_view> head = split(lines[0], ' ');
  if (head.empty() || head[0] != kMagic)
    fail_hint("the file may be damaged or not a competition schedule",
              "{}:1: not a competition schedule: expected a first line starting with '{}'", source,
              kMagic);
  if (head.size() < 2 || head[1] != kVersion)
    fail("{}:1: unsupported competition schedule version '{}' (this build reads {})", source,
         head.size() < 2 ? std::string_view() : head[1], kVersion);
  if (head.size() != 5)
    fail("{}:1: malformed header: expected '{} {} steps=N layers=L pairs=P'", source, kMagic,
         kVersion);
  int steps = 0, layers = 0;
  int64_t pairs = 0;
  auto field = [&](std::string_view token, std::string_view name, auto& value) {
    if (!token.starts_with(name) || !parse_uint(token.substr(name.size()), value))
      fail("{}:1: malformed header field '{}': expected {}N with N a non-negative integer", source,
           token, name);
  };
  field(head[2], "steps=", steps);
  field(head[3], "layers=", layers);
  field(head[4], "pairs=", pairs);
  if (int64_t{steps} * layers > kMaxTableCells)
    fail("{}:1: steps={} × layers={} is too large a table", source, steps, layers);

  CompetitionSchedule s;
  s.steps_ = steps;
  s.layers_ = layers;
  s.table_.assign(static_cast<size_t>(steps) * layers, 0);
  int64_t seen = 0;
  int64_t last_step = -1;
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t line_no = i + 1;
    const std::string_view line = lines[i];
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos)
      fail("{}:{}: expected 'STEP: LAYER ...', got '{}'", source, line_no, line);
    int step = 0;
    if (!parse_uint(line.substr(0, colon), step))
      fail("{}:{}: '{}' is not a step number", source, line_no, line.substr(0, colon));
    if (step >= steps)
      fail("{}:{}: step {} is beyond the table (steps={})", source, line_no, step, steps);
    if (step <= last_step)
      fail("{}:{}: step {} is not after the previous line's step {} (steps must ascend, once "
           "each)",
           source, line_no, step, last_step);
    last_step = step;
    const std::string_view rest = line.substr(colon + 1);
    if (!rest.starts_with(' '))
      fail("{}:{}: step {} lists no layers (expected 'STEP: LAYER ...')", source, line_no, step);
    int last_layer = -1;
    for (std::string_view token : split(rest.substr(1), ' ')) {
      int layer = 0;
      if (!parse_uint(token, layer))
        fail("{}:{}: '{}' is not a layer index", source, line_no, token);
      if (layer >= layers)
        fail("{}:{}: layer {} is beyond the table (layers={})", source, line_no, layer, layers);
      if (layer <= last_layer)
        fail("{}:{}: layer {} is not after layer {} (layers must ascend, once each)", source,
             line_no, layer, last_layer);
      last_layer = layer;
      s.table_[static_cast<size_t>(step) * layers + layer] = 1;
      ++seen;
    }
  }
  if (seen != pairs)
    fail_hint("the file may be truncated or edited",
              "{}:1: the header says pairs={} but the table holds {}", source, pairs, seen);
  return s;
}

}  // namespace competelm
