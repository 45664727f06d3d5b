#pragma once
// competelm-export: a saved checkpoint → files other tools read.
//   hf           dense models only: model.safetensors in the Hugging Face GPT-2 layout
//                (export/hf_gpt2.hpp) + config.json (GPT2Config)
//   safetensors  any model: model.safetensors with our own tensor names and shapes unchanged
//                (MoE experts stacked on dim 0, wte padded to Vp rows) + config.json holding
//                the resolved config + config.yaml (the same, loadable by competelm)
#include <string>
#include <vector>

namespace competelm {

enum class ExportFormat { HuggingFace, Safetensors };

ExportFormat parse_export_format(const std::string& s);  // "hf" | "safetensors"

struct ExportResult {
  std::string checkpoint_dir;          // the checkpoint that was exported
  std::vector<std::string> files;      // written, under out_dir
  size_t tensors = 0, parameters = 0;
};

// Creates out_dir if needed; existing files of the same names are replaced.
ExportResult export_checkpoint(const std::string& checkpoint, ExportFormat format, const std::string& out_dir);

}  // namespace competelm
