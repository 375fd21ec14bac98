// Privileges: only what is safe to call in a test process (DropPrivileges and LockDown would
// change this process for good: they run here in forked children, and on the running plugin in
// the integration tests).
#include "hardening/privileges.h"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <regex>
#include <string>

namespace trousseau::hardening {
namespace {

TEST_CASE("RunningAsRoot tells the effective uid", "[privileges]") {
  CHECK(RunningAsRoot() == (::geteuid() == 0));
}

TEST_CASE("DescribeProcess has the documented one-line format", "[privileges]") {
  const std::string d = DescribeProcess();
  INFO(d);
  const std::regex format(
      R"(^uid=(\d+) gid=(\d+) caps=(none|some) no_new_privs=([01]) dumpable=([0-9])$)");
  std::smatch m;
  REQUIRE(std::regex_match(d, m, format));
  CHECK(std::stoul(m[1].str()) == ::geteuid());
  CHECK(std::stoul(m[2].str()) == ::getegid());
  CHECK(std::stoi(m[4].str()) == ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
  CHECK(std::stoi(m[5].str()) == ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
  if (::geteuid() == 0) {
    CHECK(m[3].str() == "some");  // root in a test run holds capabilities
  }
  CHECK(d.find('\n') == std::string::npos);
}

// Runs `body` in a forked child; returns its exit code (or 100 + signal).
template <typename F>
int InChild(F body) {
  const pid_t pid = ::fork();
  if (pid == 0) _exit(body());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

TEST_CASE("LockDown: not dumpable, no_new_privs, core limit 0 (in a forked child)",
          "[privileges]") {
  // The child starts dumpable (set explicitly: a uid change with fs.suid_dumpable 0 would also
  // clear it, so this isolates LockDown's own prctl), calls LockDown and reports by exit code.
  const int rc = InChild([] {
    if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) return 10;
    if (::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1) return 11;
    if (!LockDown().ok()) return 12;
    if (::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) return 13;
    if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) return 14;
    rlimit core{};
    if (::getrlimit(RLIMIT_CORE, &core) != 0 || core.rlim_cur != 0 || core.rlim_max != 0) return 15;
    return 0;
  });
  CHECK(rc == 0);  // 13: still dumpable; 14: no_new_privs unset; 15: core dumps allowed
}

}  // namespace
}  // namespace trousseau::hardening
