// competelm-inspect CHECKPOINT [--json] [--tensors]
// Shows what a checkpoint holds: config summary, step, tokens seen, parameter counts (total
// and active per token), files and tensors with checksums, and the training metrics logged
// at that step.
#include <cstdio>

#include "core/cli.hpp"
#include "eval/inspect.hpp"

using namespace competelm;

namespace {

int main_inspect(int argc, char** argv) {
  Cli cli("competelm-inspect", "CHECKPOINT [--json] [--tensors]",
          "Shows a checkpoint (or a run directory's newest checkpoint): the config summary, step,\n"
          "tokens seen, parameter counts (total, and active per token for MoE models), every file\n"
          "with its size and checksum from meta.json, the tensors of model.bin (with --tensors:\n"
          "name, shape, elements and the checksum64 of each tensor's fp32 data), and the\n"
          "metrics.jsonl record of that step from the run directory. The checkpoint is verified\n"
          "(sizes and checksums) first.");
  cli.positional("CHECKPOINT", "checkpoint directory (run/checkpoints/step_N) or run directory");
  cli.option("json", "", "print one JSON object instead of the text (with the resolved config as config_yaml)");
  cli.option("tensors", "", "list every tensor of model.bin");
  if (!cli.parse(argc, argv)) return 0;
  const CheckpointInspection in = inspect_checkpoint(cli.get("CHECKPOINT"));
  const bool tensors = cli.has("tensors");
  if (cli.has("json")) std::printf("%s\n", inspection_json(in, tensors).c_str());
  else std::fputs(inspection_text(in, tensors).c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_tool("competelm-inspect", main_inspect, argc, argv); }
