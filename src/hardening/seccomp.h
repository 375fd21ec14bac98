// The in-process seccomp allowlist (libseccomp), loaded after privileges are dropped and applied
// to every thread (TSYNC), since gRPC and libcurl run threads of their own.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace trousseau::hardening {

enum class SeccompAction {
  kKill,     // default: a syscall outside the allowlist kills the whole process
  kLogTrap,  // debugging: SIGSYS handler logs the syscall number to stderr, the call fails ENOSYS
};

struct SeccompRuleInfo {
  std::string syscall;
  std::string group;      // the purpose group it belongs to
  bool conditional;       // true when argument filters narrow it
};

// The allowlist as data: for the container runtime profile (security/seccomp/trousseau.json),
// the `trousseau seccomp-rules` command and the tests.
const std::vector<SeccompRuleInfo>& SeccompAllowlist();

// Builds and loads the filter for all threads. Non-native architectures are killed.
absl::Status ApplySeccomp(SeccompAction action);

}  // namespace trousseau::hardening
