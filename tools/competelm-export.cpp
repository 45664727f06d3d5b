// competelm-export CHECKPOINT --format hf|safetensors --out DIR
// Writes a saved model in a format other tools read (see src/export/export_model.hpp).
#include <fmt/format.h>

#include "core/cli.hpp"
#include "core/error.hpp"
#include "export/export_model.hpp"

using namespace competelm;

static int main_export(int argc, char** argv) {
  Cli cli("competelm-export", "CHECKPOINT --format hf|safetensors --out DIR",
          "Exports a saved model (a checkpoint directory, or a run directory: its newest checkpoint).\n"
          "  hf           Hugging Face GPT-2 layout (model.safetensors + config.json), dense models only;\n"
          "               loads with transformers' GPT2LMHeadModel.from_pretrained(DIR)\n"
          "  safetensors  any model (dense or MoE) with competelm's tensor names unchanged, plus config.json\n"
          "               and config.yaml (the resolved config)");
  cli.positional("CHECKPOINT", "checkpoint directory or run directory");
  cli.option("format", "FORMAT", "hf | safetensors");
  cli.option("out", "DIR", "output directory (created if missing)");
  if (!cli.parse(argc, argv)) return 0;
  if (!cli.has("format")) fail("--format is required (hf | safetensors)");
  if (!cli.has("out")) fail("--out is required");
  const ExportFormat format = parse_export_format(cli.get("format"));
  const ExportResult r = export_checkpoint(cli.get("CHECKPOINT"), format, cli.get("out"));
  fmt::print("exported {} ({} tensors, {} parameters) as {}:\n", r.checkpoint_dir, r.tensors, r.parameters,
             cli.get("format"));
  for (const std::string& f : r.files) fmt::print("  {}\n", f);
  return 0;
}

int main(int argc, char** argv) { return run_tool("competelm-export", main_export, argc, argv); }
