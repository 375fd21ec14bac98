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

// Syscalls the process makes between execve and loading its own filter (privilege drop, socket
// creation, capability and rlimit changes, the filter load itself). A container runtime's profile
// must allow these too, since it applies its profile before our process starts.
const std::vector<std::string>& StartupSyscalls();

// The container runtime profile (OCI / Kubernetes Localhost seccomp JSON): the allowlist plus
// StartupSyscalls(), without argument filters, everything else failing with EPERM.
std::string RuntimeProfileJson();

// Builds and loads the filter for all threads. Non-native architectures are killed.
// state_dir_fd >= 0 (state.file is set): files may also be created (openat with any flags),
// renamed and removed relative to that directory descriptor only, and fsynced; -1: not at all.
absl::Status ApplySeccomp(SeccompAction action, int state_dir_fd = -1);

}  // namespace trousseau::hardening
