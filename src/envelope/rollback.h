// Key rollback detection (docs/rollback.md): remembers the highest Transit key version and the
// creation time of every version seen, and names the problem when Vault later reports less (a
// restore from an older backup) or different creation times (the key deleted and recreated
// under the same name). Memory only: a restart takes the key as Vault reports it as the new
// baseline. Not thread-safe; the owner locks.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "vault/transit_client.h"

namespace trousseau::envelope {

class RollbackGuard {
 public:
  // Checks a read-key answer. Consistent: records it (raising the high-water mark) and returns
  // "". Otherwise returns a one-line description (what happened, what to do) and records
  // nothing, so the guard keeps comparing against what was seen before the rollback.
  // `identity` ("<ns/>mount/key") names the key in the message.
  std::string Observe(const vault::KeyInfo& info, const std::string& identity);

  int64_t high_version() const { return high_version_; }

 private:
  int64_t high_version_ = 0;
  std::map<int64_t, std::string> created_;
};

}  // namespace trousseau::envelope
