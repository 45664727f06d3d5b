#pragma once
// The run configuration: one YAML file, strict schema, command-line overrides.
//
// Every key lives in one schema table (config/schema.cpp) that gives its type, default,
// allowed range or values and a one-line description. The loader, the validator, the
// resolved-config writer and the README's config reference are all generated from it.
#include <cstdint>
#include <string>
#include <vector>

namespace competelm {

struct RunSection {
  std::string dir = "runs/default";   // run.dir
  uint64_t seed = 1337;               // run.seed
  std::string device = "auto";        // run.device: auto|cpu|cuda
  std::string precision = "auto";     // run.precision: auto|fp32|tf32|bf16 (auto: bf16 on CUDA)
  int threads = 0;                    // run.threads: OpenMP/BLAS threads, 0 = all cores
};

struct ModelSection {
  int n_layer = 12;                   // model.n_layer
  int d_model = 768;                  // model.d_model
  int n_head = 12;                    // model.n_head
  int seq_len = 1024;                 // model.seq_len
  int vocab_size = 50257;             // model.vocab_size
  float init_std = 0.02f;             // model.init_std
};

// Mixture-of-Experts FFN layers (../shared/spec/competesmoe.md). n_experts = 0: dense model.
struct MoeSection {
  int n_experts = 0;                          // moe.n_experts (0 = dense: every FFN is an MLP)
  int top_k = 2;                              // moe.top_k
  std::string router = "competesmoe";         // moe.router: softmax_topk|competesmoe|sigmoid_topk
  std::string layers = "all";                 // moe.layers: all | none | every:N[:OFFSET] | "0,2,5"
  int expert_hidden = 0;                      // moe.expert_hidden (0 = 4·d_model/top_k rounded up to 8s: K experts ≈ one dense MLP)
  int shared_experts = 0;                     // moe.shared_experts (always-on, added to the routed output)
  std::string balance = "entropy";            // moe.balance: entropy|switch
  float balance_coef = 0.01f;                 // moe.balance_coef
  float z_loss_coef = 0.0f;                   // moe.z_loss_coef
  std::string competition_score = "softplus_mean";  // moe.competition_score: softplus_mean|l2
  float competition_rate = 0.07f;             // moe.competition_rate
  float competition_warmup = 0.05f;           // moe.competition_warmup (fraction of train.steps)
  int competition_max_layers = 2;             // moe.competition_max_layers (per step)
  float router_coef = 0.001f;                 // moe.router_coef (distillation)
  float distill_theta = 0.2f;                 // moe.distill_theta
  std::string distill_target = "full";        // moe.distill_target: full|topk
  float diversity_coef = 0.005f;              // moe.diversity_coef
  float competition_balance_coef = 0.005f;    // moe.competition_balance_coef
};

struct DataSection {
  std::string train = "data/brown/brown_train_*.bin";  // data.train (glob)
  std::string val = "data/brown/brown_val_*.bin";      // data.val (glob)
  bool shuffle = true;                                 // data.shuffle
};

struct OptimSection {
  float lr = 6e-4f;                   // optim.lr (peak)
  float min_lr_frac = 0.1f;           // optim.min_lr_frac: floor = lr × this
  std::string schedule = "cosine";    // optim.schedule: cosine|linear|constant|wsd
  int warmup_steps = 0;               // optim.warmup_steps
  float wsd_decay_frac = 0.2f;        // optim.wsd_decay_frac: final share of steps that decay (wsd)
  float beta1 = 0.9f;                 // optim.beta1
  float beta2 = 0.95f;                // optim.beta2
  float eps = 1e-8f;                  // optim.eps
  float weight_decay = 0.1f;          // optim.weight_decay
  float grad_clip = 1.0f;             // optim.grad_clip (0 = off)
  bool decay_embeddings = false;      // optim.decay_embeddings
  bool decay_norms = false;           // optim.decay_norms
};

struct TrainSection {
  int steps = 1000;                   // train.steps
  int micro_batch = 4;                // train.micro_batch: sequences per rank per micro-step
  int64_t batch_tokens = 0;           // train.batch_tokens: global tokens / step (0 = one micro-batch per rank)
  float spike_factor = 3.0f;          // train.spike_factor: warn when loss > factor × running mean (0 = off)
  std::string on_nan = "stop";        // train.on_nan: stop|skip
};

struct CheckpointSection {
  int every = 0;                      // checkpoint.every (0 = only at the end / on signal)
  int keep = 3;                       // checkpoint.keep
  std::string resume = "never";       // checkpoint.resume: never|auto
  bool fallback = false;              // checkpoint.fallback: use an older checkpoint if the newest is bad
  bool at_end = true;                 // checkpoint.at_end
  std::string on_error = "stop";      // checkpoint.on_error: stop|continue (a failed write, e.g. disk full)
};

struct LogSection {
  int every = 1;                      // log.every
  std::string level = "info";         // log.level: trace|debug|info|warn|error
};

struct EvalSection {
  int every = 100;                    // eval.every (0 = off; also at the last step)
  int val_batches = 8;                // eval.val_batches (micro-batches per validation)
  int sample_every = 0;               // eval.sample_every (0 = off)
  int sample_tokens = 32;             // eval.sample_tokens
  float temperature = 1.0f;           // eval.temperature
  std::string prompt = "The";         // eval.prompt
  std::string tokenizer_dir = "data/tokenizer";  // eval.tokenizer_dir (encoder.json, vocab.bpe)
};

struct DistSection {
  int expert_parallel = 1;            // dist.expert_parallel: ranks sharing one copy of the experts
  std::string gpu_comm = "auto";      // dist.gpu_comm: auto|nccl|mpi (collectives on GPU memory)
  float bucket_mb = 25.0f;            // dist.bucket_mb: gradient buckets reduced during the backward
};

struct Config {
  RunSection run;
  ModelSection model;
  MoeSection moe;
  DataSection data;
  OptimSection optim;
  TrainSection train;
  CheckpointSection checkpoint;
  LogSection log;
  EvalSection eval;
  DistSection dist;
  std::string source;                 // the file it was loaded from
};

// Loads `path`, applies `overrides` ("key.sub=value", later ones win), fills defaults and
// validates everything. Throws competelm::Error on: an unknown key (naming the file, line,
// and the closest valid key: "did you mean"), a wrong type or an out-of-range / unknown
// enum value (naming key, file, line and the allowed range), a malformed override, and
// cross-key inconsistencies (d_model % n_head, batch_tokens divisibility is checked by the
// trainer since it needs the world size).
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same from a YAML string (tests); `name` stands in for the file name in messages.
Config parse_config(const std::string& yaml_text, const std::string& name,
                    const std::vector<std::string>& overrides = {});

// The fully resolved config as YAML (every key, defaults included), loadable again.
std::string to_yaml(const Config& cfg);

// Markdown table of every key: key, type, default, allowed values, meaning.
std::string config_reference_markdown();

}  // namespace competelm
