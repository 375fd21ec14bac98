// Shedding privilege at start. The order matters and main.cpp follows it:
//   1. ShedBoundingSet()  while still root, before any thread starts, so threads inherit none;
//   2. (open the socket as root)
//   3. DropPrivileges()   setgroups, setresgid, setresuid, clear capabilities, then prove that
//                         the old ids and capabilities cannot be regained;
//   4. LockDown()         no_new_privs, not dumpable, no core files.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"

namespace trousseau::hardening {

bool RunningAsRoot();

// Empties the capability bounding set (libcap-ng). A no-op when not root.
absl::Status ShedBoundingSet();

// When root: become uid/gid with no supplementary groups and no capabilities. When not root:
// verify that we hold no capabilities. Either way, verify the result.
absl::Status DropPrivileges(uid_t uid, gid_t gid);

// PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE 0, RLIMIT_CORE 0.
absl::Status LockDown();

// One line for logs: "uid=65532 gid=65532 caps=none no_new_privs=1 dumpable=0".
std::string DescribeProcess();

}  // namespace trousseau::hardening
