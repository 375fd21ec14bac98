#include "kms/malloc_env.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <string_view>

namespace trousseau::kms {

std::optional<std::string> TunablesToRun(const char* current) {
  const std::string setting = std::string(kTcacheTunable) + "=" + std::to_string(kTcacheCount);
  if (current == nullptr || *current == '\0') return setting;
  const std::string_view cur(current);
  // Each item must be name=value with a non-empty name; ours is looked for by name.
  size_t start = 0;
  while (start <= cur.size()) {
    size_t end = cur.find(':', start);
    if (end == std::string_view::npos) end = cur.size();
    const std::string_view item = cur.substr(start, end - start);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0) return std::nullopt;
    if (item.substr(0, eq) == kTcacheTunable) return std::nullopt;
    start = end + 1;
  }
  return std::string(cur) + ":" + setting;
}

void ReexecWithMallocTunables(char** argv) {
  const char* current = getenv("GLIBC_TUNABLES");
  const std::optional<std::string> value = TunablesToRun(current);
  if (!value) return;
  const bool had_previous = current != nullptr;
  const std::string previous = had_previous ? current : "";
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return;
  self[n] = '\0';
  // A binary replaced on disk since it started reads "... (deleted)": run on as we are.
  if (access(self, X_OK) != 0) return;
  if (setenv("GLIBC_TUNABLES", value->c_str(), 1) != 0) return;
  execv(self, argv);
  // Failed: put the environment back as it was and go on with glibc's defaults.
  if (had_previous) {
    setenv("GLIBC_TUNABLES", previous.c_str(), 1);
  } else {
    unsetenv("GLIBC_TUNABLES");
  }
}

}  // namespace trousseau::kms
