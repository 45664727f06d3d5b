// competelm-train CONFIG.yaml [--set key=value]... [--resume | --resume-from DIR]
#include "config/config.hpp"
#include "core/cli.hpp"
#include "train/trainer.hpp"

using namespace competelm;

static int main_train(int argc, char** argv) {
  Cli cli("competelm-train", "CONFIG.yaml [--set key.sub=value]... [--resume]",
          "Trains a GPT model as described by a YAML config (see configs/ and the README's config "
          "reference).\nSIGTERM or SIGINT finishes the current step, writes a checkpoint and exits 0.");
  cli.positional("CONFIG", "the run's YAML config");
  cli.option("set", "KEY=VALUE", "override a config key, e.g. --set train.steps=100", true);
  cli.option("resume", "", "continue from the newest complete checkpoint in run.dir (as checkpoint.resume: auto)");
  cli.option("resume-from", "DIR", "continue from this checkpoint directory");
  cli.option("quiet", "", "console shows warnings and errors only");
  if (!cli.parse(argc, argv)) return 0;
  const Config cfg = load_config(cli.get("CONFIG"), cli.all("set"));
  TrainerOptions opts;
  opts.resume = cli.has("resume");
  opts.resume_from = cli.get("resume-from");
  opts.quiet = cli.has("quiet");
  return train(cfg, opts);
}

int main(int argc, char** argv) { return run_tool("competelm-train", main_train, argc, argv); }
