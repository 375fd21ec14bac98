// Privileges: only what is safe to call in a test process (DropPrivileges and LockDown would
// change this process for good, and are covered by the integration tests).
#include "hardening/privileges.h"

#include <sys/prctl.h>
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

}  // namespace
}  // namespace trousseau::hardening
