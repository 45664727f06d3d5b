// competelm-import SOURCE --out RUN_DIR [--config base.yaml] [--set key=value]...
// GPT-2 weights (Hugging Face directory or llm.c .bin) → a competelm checkpoint at step 0.
#include <fmt/format.h>

#include "config/config.hpp"
#include "core/cli.hpp"
#include "core/error.hpp"
#include "export/import_model.hpp"

using namespace competelm;

static int main_import(int argc, char** argv) {
  Cli cli("competelm-import", "SOURCE --out RUN_DIR [--config base.yaml] [--set key=value]...",
          "Imports GPT-2 weights into a new run directory as the committed checkpoint\n"
          "RUN_DIR/checkpoints/step_00000000 (zero optimizer moments, step 0), which\n"
          "`competelm-train CONFIG --resume-from RUN_DIR/checkpoints/step_00000000` and the tools for saved\n"
          "models open. SOURCE: a Hugging Face GPT-2 directory (model.safetensors + config.json) or an llm.c\n"
          "checkpoint such as gpt2_124M.bin (fp32 or bf16). The model section of the written config comes from\n"
          "SOURCE (and moe.n_experts = 0); every other key from --config (built-in defaults without it).");
  cli.positional("SOURCE", "Hugging Face GPT-2 directory or llm.c checkpoint file");
  cli.option("out", "RUN_DIR", "run directory to create (must hold no checkpoints)");
  cli.option("config", "FILE", "base config for the keys outside the model section");
  cli.option("set", "KEY=VALUE", "override a key of the base config (repeatable)", true);
  if (!cli.parse(argc, argv)) return 0;
  if (!cli.has("out")) fail("--out is required");
  const Config base = cli.has("config") ? load_config(cli.get("config"), cli.all("set"))
                                        : parse_config("{}", "<defaults>", cli.all("set"));
  const ImportResult r = import_model(cli.get("SOURCE"), cli.get("out"), base);
  fmt::print("imported {} ({}): {} layers × {} d_model × {} heads, window {}, vocab {}, {} parameters\n",
             cli.get("SOURCE"), r.source_kind, r.shape.n_layer, r.shape.d_model, r.shape.n_head, r.shape.seq_len,
             r.shape.vocab_size, r.parameters);
  fmt::print("wrote {}\n", r.checkpoint_dir);
  return 0;
}

int main(int argc, char** argv) { return run_tool("competelm-import", main_import, argc, argv); }
