// Shared helpers of the fuzz targets: the per-process scratch directory and checked writes.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "fuzz_targets.hpp"

namespace competelm::fuzz {

namespace {

// Owns the scratch directory; the destructor (at exit) removes it.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/competelm-fuzz-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      std::perror("fuzz: mkdtemp");
      std::abort();
    }
    path = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

const std::string& scratch_dir() {
  static const ScratchDir dir;  // one per process: targets run one input at a time
  return dir.path;
}

void write_bytes(const std::string& path, const void* bytes, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  const char* p = static_cast<const char*>(bytes);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      std::perror(path.c_str());
      std::abort();
    }
    p += n;
    size -= size_t(n);
  }
  ::close(fd);
}

void property_failed(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz: property violated: %s\n%s\n", what, detail.c_str());
  std::abort();
}

}  // namespace competelm::fuzz
