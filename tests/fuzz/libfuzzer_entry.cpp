// libFuzzer's entry point for one target, chosen at compile time: tests/fuzz/CMakeLists.txt
// builds this file once per target with -DCOMPETELM_FUZZ_TARGET=fuzz_<name>.
#include "fuzz_targets.hpp"

#ifndef COMPETELM_FUZZ_TARGET
#error "define COMPETELM_FUZZ_TARGET (fuzz_config, fuzz_shard, fuzz_checkpoint or fuzz_tokenizer)"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return competelm::fuzz::COMPETELM_FUZZ_TARGET(data, size);
}
