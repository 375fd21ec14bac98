// The operator commands' flag parser: forms it accepts and the errors that name the problem.
#include "cli/flags.h"

#include <catch2/catch.hpp>

namespace trousseau::cli {
namespace {

using Catch::Contains;

TEST_CASE("flags: --name value, --name=value, booleans, help and positionals", "[cli][flags]") {
  auto f = Flags::Parse("x", {"--socket", "/s", "--api=v1beta1", "--raw", "a.log", "-", "-h"},
                        {{"socket", true}, {"api", true}, {"raw", false}});
  REQUIRE(f.ok());
  CHECK(f->get("socket") == "/s");
  CHECK(f->get("api") == "v1beta1");
  CHECK(f->has("raw"));
  CHECK_FALSE(f->has("nope"));
  CHECK(f->get("nope", "dflt") == "dflt");
  CHECK(f->help());
  CHECK(f->positional() == std::vector<std::string>{"a.log", "-"});
}

TEST_CASE("flags: after -- everything is positional", "[cli][flags]") {
  auto f = Flags::Parse("x", {"--", "--socket", "-h"}, {{"socket", true}});
  REQUIRE(f.ok());
  CHECK_FALSE(f->help());
  CHECK(f->positional() == std::vector<std::string>{"--socket", "-h"});
}

TEST_CASE("flags: errors name the flag", "[cli][flags][negative]") {
  auto unknown = Flags::Parse("status", {"--sockett", "/s"}, {{"socket", true}});
  REQUIRE_FALSE(unknown.ok());
  CHECK_THAT(std::string(unknown.status().message()), Contains("--sockett") && Contains("status"));
  auto missing = Flags::Parse("status", {"--socket"}, {{"socket", true}});
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(std::string(missing.status().message()), Contains("--socket needs a value"));
  auto boolval = Flags::Parse("x", {"--raw=yes"}, {{"raw", false}});
  REQUIRE_FALSE(boolval.ok());
  CHECK_THAT(std::string(boolval.status().message()), Contains("--raw takes no value"));
  auto single = Flags::Parse("x", {"-s"}, {{"socket", true}});
  REQUIRE_FALSE(single.ok());
  CHECK_THAT(std::string(single.status().message()), Contains("-s"));
}

}  // namespace
}  // namespace trousseau::cli
