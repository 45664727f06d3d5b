#include "train/run_logger.hpp"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace competelm {

std::shared_ptr<spdlog::logger> make_run_logger(const std::string& run_dir, const std::string& level,
                                                bool quiet, int rank) {
  const bool is_main_rank = rank == 0;
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  // Other ranks' warnings say whose they are.
  console->set_pattern(is_main_rank ? "%^[%H:%M:%S %L]%$ %v" : "%^[%H:%M:%S %L rank " + std::to_string(rank) + "]%$ %v");
  // Only rank 0 talks on the console unless something goes wrong.
  console->set_level(quiet || !is_main_rank ? spdlog::level::warn : spdlog::level::trace);
  sinks.push_back(console);
  if (is_main_rank) {
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(run_dir + "/train.log", false);
    file->set_pattern("[%Y-%m-%d %H:%M:%S.%e %L] %v");
    sinks.push_back(file);
  }
  auto logger = std::make_shared<spdlog::logger>("competelm", sinks.begin(), sinks.end());
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return logger;
}

}  // namespace competelm
