#include "envelope/rollback.h"

namespace trousseau::envelope {
namespace {

constexpr const char* kWhatToDo =
    "; Encrypt is refused so that no new Secret depends on it. Restore the newer state of the "
    "key in Vault, or, if this key is meant to be the one in use now, check that existing "
    "Secrets still decrypt and restart the plugin to accept it (docs/rollback.md)";

}  // namespace

std::string RollbackGuard::Observe(const vault::KeyInfo& info, const std::string& identity) {
  const std::string what_to_do = recovery_.empty() ? std::string(kWhatToDo)
                                                  : std::string(kWhatToDo) + "; " + recovery_;
  if (info.latest_version < mark_.high_version) {
    return "transit key " + identity + " rolled back: Vault reports latest version " +
           std::to_string(info.latest_version) + ", but version " + std::to_string(mark_.high_version) +
           " was seen before (Vault restored from an older backup, or the key deleted and "
           "recreated?)" + what_to_do;
  }
  for (const auto& [version, when] : info.created) {
    auto it = mark_.created.find(version);
    if (it != mark_.created.end() && it->second != when) {
      return "transit key " + identity + " replaced: version " + std::to_string(version) +
             " now has creation time " + when + ", but it was " + it->second +
             " before (the key deleted and recreated under the same name, or Vault restored "
             "from a backup and the key rotated again?)" + what_to_do;
    }
  }
  mark_.high_version = info.latest_version;
  for (const auto& [version, when] : info.created) mark_.created.emplace(version, when);
  return "";
}

}  // namespace trousseau::envelope
