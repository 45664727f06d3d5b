#include "eval/eval_report.hpp"

#include <fmt/format.h>

#include "core/json.hpp"

namespace competelm {
namespace {

std::string opt_number(const std::optional<double>& v, const char* fmt_spec = "{:.4f}") {
  return v ? fmt::format(fmt::runtime(fmt_spec), *v) : "n/a";
}

std::string rate(double x) {
  if (x >= 1e6) return fmt::format("{:.2f}M", x / 1e6);
  if (x >= 1e3) return fmt::format("{:.1f}k", x / 1e3);
  return fmt::format("{:.0f}", x);
}

JsonObject source_json(const SourceEval& s) {
  JsonObject o;
  o.add("path", s.source.path);
  if (s.source.path != "total") o.add("kind", s.source.kind == EvalSource::Kind::Shards ? "shards" : "text");
  o.add("batches", s.batches).add("tokens", s.tokens).add("loss", s.loss).add("perplexity", s.perplexity);
  if (s.bytes) o.add("bytes", *s.bytes);
  else o.add_null("bytes");
  if (s.bpb) o.add("bpb", *s.bpb);
  else o.add_null("bpb");
  o.add("wrapped", s.wrapped);
  return o;
}

template <typename T, typename F>
std::string json_array(const std::vector<T>& items, F&& to_json) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) out += ',';  // plain appends: GCC 12 warns (-Wrestrict) on a temporary concatenation
    out += to_json(items[i]);
  }
  out += ']';
  return out;
}

}  // namespace

std::string eval_table(const EvalReport& r) {
  std::string out = fmt::format("checkpoint {} (step {}), device {}, B={} T={}\n", r.checkpoint, r.step, r.device,
                                r.B, r.T);
  if (r.lm) {
    const LmEvalResult& lm = *r.lm;
    out += "\nlanguage modelling (mean cross-entropy of the LM head, nats/token; MoE aux losses excluded)\n";
    out += fmt::format("  {:<40} {:>7} {:>9} {:>9} {:>11} {:>8}\n", "source", "batches", "tokens", "loss", "perplexity",
                       "bpb");
    auto row = [&](const SourceEval& s) {
      std::string name = s.source.path;
      if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
      out += fmt::format("  {:<40} {:>7} {:>9} {:>9.4f} {:>11.3f} {:>8}{}\n", name, s.batches, s.tokens, s.loss,
                         s.perplexity, opt_number(s.bpb), s.wrapped ? "  (data repeated)" : "");
    };
    for (const SourceEval& s : lm.sources) row(s);
    if (lm.sources.size() > 1) row(lm.total);
    if (!lm.routing.empty()) {
      out += fmt::format("\nrouting ({}; over the same {} tokens)\n", r.router, lm.total.tokens);
      out += fmt::format("  {:<6} {:>9} {:>6} {:>15} {:>8}  {}\n", "block", "tokens", "dead", "entropy (max)",
                         "overlap", "tokens per expert (share of N·K)");
      for (const RoutingLayerEval& L : lm.routing) {
        std::string load;
        for (size_t e = 0; e < L.tokens_per_expert.size(); ++e)
          load += fmt::format("{}{} ({:.3f})", e ? " " : "", L.tokens_per_expert[e], L.fraction(int(e)));
        out += fmt::format("  {:<6} {:>9} {:>6} {:>15} {:>8}  {}\n", L.block, L.tokens,
                           fmt::format("{}/{}", L.dead, L.tokens_per_expert.size()),
                           fmt::format("{:.3f} ({:.3f})", L.entropy, L.max_entropy), opt_number(L.overlap, "{:.3f}"),
                           load);
      }
    }
    out += fmt::format("\nspeed: {} tokens in {:.3f} s = {} tok/s (LM forwards)\n", lm.total.tokens, lm.seconds,
                       rate(lm.tokens_per_s));
  }
  if (r.mc) {
    const McResult& mc = *r.mc;
    out += fmt::format("\nmultiple choice: {} ({} items)\n", r.mc_file, mc.items.size());
    out += fmt::format("  acc      {:.4f} ({}/{})   lowest total loss of the ending's tokens\n", mc.acc(), mc.correct,
                       mc.items.size());
    out += fmt::format("  acc_norm {:.4f} ({}/{})   lowest mean loss per ending token\n", mc.acc_norm(),
                       mc.correct_norm, mc.items.size());
  }
  return out;
}

std::string eval_json(const EvalReport& r) {
  JsonObject o;
  o.add("checkpoint", r.checkpoint).add("step", r.step).add("device", r.device).add("micro_batch", r.B).add("seq_len", r.T);
  if (r.lm) {
    const LmEvalResult& lm = *r.lm;
    JsonObject j = source_json(lm.total);
    j.add_raw("sources", json_array(lm.sources, [](const SourceEval& s) { return source_json(s).str(); }));
    j.add("seconds", lm.seconds).add("tokens_per_s", lm.tokens_per_s);
    o.add("lm", j);
    if (!lm.routing.empty()) {
      JsonObject rt;
      rt.add("router", r.router);
      rt.add_raw("layers", json_array(lm.routing, [](const RoutingLayerEval& L) {
        JsonObject l;
        l.add("layer", L.block).add("tokens", L.tokens).add("top_k", L.top_k);
        l.add_raw("tokens_per_expert", json_array(L.tokens_per_expert, [](int64_t c) { return std::to_string(c); }));
        std::vector<double> frac;
        for (size_t e = 0; e < L.tokens_per_expert.size(); ++e) frac.push_back(L.fraction(int(e)));
        l.add_raw("fraction", json_array(frac, [](double f) { return json_number(f); }));
        l.add("dead", L.dead).add("entropy", L.entropy).add("max_entropy", L.max_entropy);
        if (L.overlap) l.add("overlap", *L.overlap);
        else l.add_null("overlap");
        return l.str();
      }));
      o.add("routing", rt);
    } else {
      o.add_null("routing");
    }
  }
  if (r.mc) {
    const McResult& mc = *r.mc;
    JsonObject m;
    m.add("file", r.mc_file).add("items", mc.items.size()).add("acc", mc.acc()).add("acc_norm", mc.acc_norm());
    m.add("correct", mc.correct).add("correct_norm", mc.correct_norm).add("seconds", mc.seconds);
    m.add_raw("pred", json_array(mc.items, [](const McItemScore& s) { return std::to_string(s.pred_sum); }));
    m.add_raw("pred_norm", json_array(mc.items, [](const McItemScore& s) { return std::to_string(s.pred_norm); }));
    o.add("mc", m);
  }
  return o.str();
}

}  // namespace competelm
