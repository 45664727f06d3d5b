#include "model/from_config.hpp"

#include "moe/moe_config.hpp"

namespace competelm {

ModelShape model_shape(const Config& cfg) {
  ModelShape s;
  s.n_layer = cfg.model.n_layer;
  s.d_model = cfg.model.d_model;
  s.n_head = cfg.model.n_head;
  s.seq_len = cfg.model.seq_len;
  s.vocab_size = cfg.model.vocab_size;
  return s;
}

ModelInit model_init(const Config& cfg) {
  ModelInit init;
  init.std = cfg.model.init_std;
  init.decay_embeddings = cfg.optim.decay_embeddings;
  init.decay_norms = cfg.optim.decay_norms;
  return init;
}

ModelMoe model_moe(const Config& cfg) {
  ModelMoe m;
  if (cfg.moe.n_experts > 0) {
    m.layers = moe_layer_mask(cfg);
    m.options = moe_options(cfg);
  }
  return m;
}

}  // namespace competelm
