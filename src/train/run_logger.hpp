#pragma once
// The run's logger: console + run.dir/train.log, installed as spdlog's default logger so
// warnings from every module (data loader, checkpoints) also land in the run's log file.
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace competelm {

std::shared_ptr<spdlog::logger> make_run_logger(const std::string& run_dir, const std::string& level,
                                                bool quiet, int rank);

}  // namespace competelm
