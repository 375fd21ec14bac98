#include "hardening/privileges.h"

#include <cap-ng.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace trousseau::hardening {
namespace {

absl::Status Fail(const std::string& what) {
  return absl::FailedPreconditionError("privileges: " + what + ": " + std::strerror(errno));
}

absl::Status VerifyNoCapabilities() {
  capng_get_caps_process();
  if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE) {
    return absl::FailedPreconditionError("privileges: capabilities remain after dropping them");
  }
  return absl::OkStatus();
}

}  // namespace

bool RunningAsRoot() { return geteuid() == 0; }

absl::Status ShedBoundingSet() {
  if (!RunningAsRoot()) return absl::OkStatus();
  capng_get_caps_process();
  capng_clear(CAPNG_SELECT_BOUNDS);
  if (capng_apply(CAPNG_SELECT_BOUNDS) != 0) {
    return absl::FailedPreconditionError("privileges: cannot empty the capability bounding set");
  }
  return absl::OkStatus();
}

absl::Status DropPrivileges(uid_t uid, gid_t gid) {
  if (RunningAsRoot()) {
    if (uid == 0 || gid == 0) return absl::InvalidArgumentError("privileges: refusing to run as root");
    const gid_t groups[1] = {gid};
    if (setgroups(1, groups) != 0) return Fail("setgroups");
    if (setresgid(gid, gid, gid) != 0) return Fail("setresgid");
    if (setresuid(uid, uid, uid) != 0) return Fail("setresuid");
    // The kernel cleared permitted and effective sets on leaving uid 0; make sure of it.
    capng_clear(CAPNG_SELECT_CAPS);
    if (capng_apply(CAPNG_SELECT_CAPS) != 0) {
      return absl::FailedPreconditionError("privileges: cannot clear capabilities");
    }
    // Prove there is no way back.
    if (setresuid(0, 0, 0) == 0 || setuid(0) == 0) {
      return absl::FailedPreconditionError("privileges: uid 0 could be regained after the drop");
    }
    if (setresgid(0, 0, 0) == 0) {
      return absl::FailedPreconditionError("privileges: gid 0 could be regained after the drop");
    }
  } else if (getuid() == 0 || getgid() == 0) {
    return absl::FailedPreconditionError("privileges: real uid or gid is 0 while effective is not");
  }
  uid_t r, e, s;
  gid_t rg, eg, sg;
  getresuid(&r, &e, &s);
  getresgid(&rg, &eg, &sg);
  if (r == 0 || e == 0 || s == 0 || rg == 0 || eg == 0 || sg == 0) {
    return absl::FailedPreconditionError("privileges: a root id remains after the drop");
  }
  std::vector<gid_t> groups(static_cast<size_t>(std::max(getgroups(0, nullptr), 0)));
  if (!groups.empty() && getgroups(static_cast<int>(groups.size()), groups.data()) < 0) {
    return Fail("getgroups");
  }
  for (gid_t g : groups) {
    if (g == 0) return absl::FailedPreconditionError("privileges: supplementary group 0 remains");
  }
  return VerifyNoCapabilities();
}

absl::Status LockDown() {
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Fail("PR_SET_NO_NEW_PRIVS");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return Fail("PR_SET_DUMPABLE");
  const rlimit none{0, 0};
  if (setrlimit(RLIMIT_CORE, &none) != 0) return Fail("RLIMIT_CORE");
  return absl::OkStatus();
}

std::string DescribeProcess() {
  capng_get_caps_process();
  const bool caps = capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE;
  return "uid=" + std::to_string(geteuid()) + " gid=" + std::to_string(getegid()) +
         " caps=" + (caps ? "some" : "none") +
         " no_new_privs=" + std::to_string(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)) +
         " dumpable=" + std::to_string(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
}

}  // namespace trousseau::hardening
