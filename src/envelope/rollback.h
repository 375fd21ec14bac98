// Key rollback detection (docs/rollback.md): remembers the highest Transit key version and the
// creation time of every version seen, and names the problem when Vault later reports less (a
// restore from an older backup) or different creation times (the key deleted and recreated
// under the same name). Memory only unless seeded from the state file (state.file,
// envelope/state_file.h): without it a restart takes the key as Vault reports it as the new
// baseline. Not thread-safe; the owner locks.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "vault/transit_client.h"

namespace trousseau::envelope {

// What the guard remembers of one key: the state file stores exactly this (docs/formats.md).
struct KeyMark {
  int64_t high_version = 0;                 // 0: nothing seen yet
  std::map<int64_t, std::string> created;   // version -> creation time as Vault wrote it
  bool operator==(const KeyMark&) const = default;
};

class RollbackGuard {
 public:
  RollbackGuard() = default;
  // Seeded from a persisted mark: the first read after a start is compared against it.
  // `recovery` (may be empty) is appended to every message: how to accept the current key when
  // the mark is persisted (restarting alone no longer does).
  RollbackGuard(KeyMark seed, std::string recovery)
      : mark_(std::move(seed)), recovery_(std::move(recovery)) {}

  // Checks a read-key answer. Consistent: records it (raising the high-water mark) and returns
  // "". Otherwise returns a one-line description (what happened, what to do) and records
  // nothing, so the guard keeps comparing against what was seen before the rollback.
  // `identity` ("<ns/>mount/key") names the key in the message.
  std::string Observe(const vault::KeyInfo& info, const std::string& identity);

  int64_t high_version() const { return mark_.high_version; }
  const KeyMark& mark() const { return mark_; }

 private:
  KeyMark mark_;
  std::string recovery_;
};

}  // namespace trousseau::envelope
