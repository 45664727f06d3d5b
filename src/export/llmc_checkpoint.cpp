#include "export/llmc_checkpoint.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.hpp"
#include "core/fs_util.hpp"
#include "export/safetensors.hpp"

namespace competelm {

bool looks_like_llmc_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  int32_t magic = 0;
  in.read(reinterpret_cast<char*>(&magic), 4);
  return in && magic == kLlmcMagic;
}

LlmcCheckpoint read_llmc_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, errno_text(errno));
  in.seekg(0, std::ios::end);
  const uint64_t size = uint64_t(in.tellg());
  in.seekg(0);
  int32_t h[256];
  if (size < sizeof(h)) fail("{}: {} bytes is shorter than llm.c's 1024-byte header", path, size);
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  if (h[0] != kLlmcMagic) fail("{}: bad magic {} (an llm.c GPT-2 checkpoint starts with {})", path, h[0], kLlmcMagic);
  if (h[1] != 3 && h[1] != 5)
    fail_hint("re-export it with llm.c's train_gpt2.py (versions 3 = fp32 and 5 = bf16 are read)",
              "{}: header version {} is not supported", path, h[1]);
  const char* names[] = {"magic", "version", "maxT", "V", "L", "NH", "C", "Vp"};
  for (int i = 2; i < 8; i++)
    if (h[i] < 1 || h[i] > (1 << 24)) fail("{}: header field {} (int {}) = {} is out of range", path, names[i], i, h[i]);
  LlmcCheckpoint ck;
  ck.version = h[1];
  ModelShape& s = ck.shape;
  s.seq_len = h[2], s.vocab_size = h[3], s.n_layer = h[4], s.n_head = h[5], s.d_model = h[6];
  ck.file_Vp = h[7];
  const int64_t maxT = s.seq_len, V = s.vocab_size, L = s.n_layer, C = s.d_model, fVp = ck.file_Vp;
  if (fVp < V) fail("{}: header Vp = {} is smaller than V = {}", path, fVp, V);
  if (C % s.n_head != 0) fail("{}: header C = {} is not divisible by NH = {}", path, C, s.n_head);

  // Sizes in llm.c order (fill_in_parameter_sizes).
  const int64_t sizes[16] = {fVp * C, maxT * C,  L * C,     L * C, L * 3 * C * C, L * 3 * C, L * C * C, L * C,
                             L * C,   L * C,     L * 4 * C * C, L * 4 * C, L * C * 4 * C, L * C, C, C};
  uint64_t numel = 0;
  for (int64_t n : sizes) numel += uint64_t(n);
  const uint64_t elem = ck.version == 3 ? 4 : 2;
  if (size != sizeof(h) + numel * elem)
    fail("{}: file is {} bytes but its header (version {}, maxT {}, V {}, Vp {}, L {}, NH {}, C {}) needs {}", path,
         size, ck.version, maxT, V, fVp, L, s.n_head, C, sizeof(h) + numel * elem);

  auto read_floats = [&](int64_t n, const char* what) {
    std::vector<float> out(static_cast<size_t>(n));
    if (elem == 4) {
      in.read(reinterpret_cast<char*>(out.data()), std::streamsize(n * 4));
    } else {
      std::vector<uint16_t> raw(static_cast<size_t>(n));
      in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(n * 2));
      for (size_t i = 0; i < raw.size(); i++) out[i] = bf16_to_f32(raw[i]);
    }
    if (!in) fail("{}: read failed in {}", path, what);
    return out;
  };
  auto put = [&](const std::string& name, std::vector<int64_t> shape, const float* src) {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    ck.tensors[name] = LoadedTensor{std::move(shape), std::vector<float>(src, src + n)};
  };
  const char* layer_names[12] = {"ln1.weight",      "ln1.bias",       "attn.qkv.weight", "attn.qkv.bias",
                                 "attn.proj.weight", "attn.proj.bias", "ln2.weight",      "ln2.bias",
                                 "mlp.fc.weight",   "mlp.fc.bias",    "mlp.proj.weight", "mlp.proj.bias"};
  const std::vector<int64_t> layer_shapes[12] = {{C}, {C}, {3 * C, C}, {3 * C}, {C, C}, {C},
                                                 {C}, {C}, {4 * C, C}, {4 * C}, {C, 4 * C}, {C}};
  // wte: our padded vocabulary may differ from the file's; rows past V are padding (zero).
  {
    const std::vector<float> wte = read_floats(sizes[0], "wte");
    const int64_t Vp = s.padded_vocab();
    std::vector<float> ours = wte;  // same padding: the file's rows exactly
    if (Vp != fVp) {
      ours.assign(size_t(Vp * C), 0.0f);
      std::copy(wte.begin(), wte.begin() + V * C, ours.begin());
    }
    ck.tensors["wte"] = LoadedTensor{{Vp, C}, std::move(ours)};
  }
  const std::vector<float> wpe = read_floats(sizes[1], "wpe");
  put("wpe", {maxT, C}, wpe.data());
  for (int k = 0; k < 12; k++) {
    const std::vector<float> stack = read_floats(sizes[2 + k], layer_names[k]);
    const int64_t per = sizes[2 + k] / L;
    for (int l = 0; l < L; l++)
      put("blocks." + std::to_string(l) + "." + layer_names[k], layer_shapes[k], stack.data() + l * per);
  }
  const std::vector<float> lnfw = read_floats(C, "lnfw"), lnfb = read_floats(C, "lnfb");
  put("lnf.weight", {C}, lnfw.data());
  put("lnf.bias", {C}, lnfb.data());
  return ck;
}

}  // namespace competelm
