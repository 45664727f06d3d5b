// competelm-train CONFIG.yaml [--set key=value]... [--resume | --resume-from DIR]
// Also one rank of `mpirun -np N competelm-train CONFIG.yaml`: every rank reads the same config.
#include <cstdlib>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "core/cli.hpp"
#include "dist/dist_context.hpp"
#include "train/trainer.hpp"

using namespace competelm;

static int main_train(int argc, char** argv, const MpiSession& mpi) {
  Cli cli("competelm-train", "CONFIG.yaml [--set key.sub=value]... [--resume]",
          "Trains a GPT model as described by a YAML config (see configs/ and the README's config "
          "reference).\nSIGTERM or SIGINT finishes the current step, writes a checkpoint and exits 0.\n"
          "Multi-rank: mpirun -np N competelm-train CONFIG.yaml (data parallel over the ranks; "
          "dist.expert_parallel: P splits each MoE layer's experts over P ranks).");
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
  return train(cfg, opts, mpi.world(), mpi.local_rank());
}

int main(int argc, char** argv) {
  // Under mpirun every message names the rank it comes from.
  std::string program = "competelm-train";
  if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK"); r && launched_by_mpi()) program += " [rank " + std::string(r) + "]";
  std::optional<MpiSession> mpi;
  const int rc = run_tool(program.c_str(), [&](int ac, char** av) {
    mpi.emplace(&ac, &av);
    return main_train(ac, av, *mpi);
  }, argc, argv);
  // An error on one rank ends the whole job (the others may be waiting in a collective).
  if (rc == 2 && mpi && mpi->world()->size() > 1) mpi->world()->abort(rc);
  return rc;
}
