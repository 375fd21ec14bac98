// The Unix socket path: directories made, stale sockets replaced, everything else refused.
#include "kms/socket.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <string>

#include "fakes/log_capture.h"
#include "fakes/temp_dir.h"

namespace trousseau::kms {
namespace {

using Catch::Contains;
using fakes::TempDir;

bool Exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

bool IsSocket(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// Binds a Unix socket at `path`; listens if asked. Returns the fd (the caller closes it).
int BindAt(const std::string& path, bool listening) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  if (listening) REQUIRE(::listen(fd, 4) == 0);
  return fd;
}

TEST_CASE("PrepareSocketPath creates missing parent directories", "[socket]") {
  TempDir dir;
  const std::string parent = dir.Path("run/kmsplugin");
  const std::string path = parent + "/kms.sock";
  auto plan = PrepareSocketPath(path);
  REQUIRE(plan.ok());
  CHECK(plan->created_directory);
  struct stat st {};
  REQUIRE(::stat(parent.c_str(), &st) == 0);
  CHECK(S_ISDIR(st.st_mode));
  CHECK((st.st_mode & 0700) == 0700);
  CHECK((st.st_mode & 0027) == 0);  // no wider than 0750
  CHECK_FALSE(Exists(path));  // only the directory; gRPC makes the socket

  auto again = PrepareSocketPath(path);
  REQUIRE(again.ok());
  CHECK_FALSE(again->created_directory);
}

TEST_CASE("PrepareSocketPath refuses a regular file at the path", "[socket][negative]") {
  TempDir dir;
  const std::string path = dir.Write("kms.sock", "not a socket");
  auto plan = PrepareSocketPath(path);
  REQUIRE_FALSE(plan.ok());
  CHECK(plan.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(plan.status().message()), Contains(path));
  CHECK_THAT(std::string(plan.status().message()), Contains("not a socket"));
  CHECK(Exists(path));  // untouched
}

TEST_CASE("PrepareSocketPath refuses a directory or a symlink at the path", "[socket][negative]") {
  TempDir dir;
  const std::string d = dir.Path("kms.sock");
  std::filesystem::create_directory(d);
  CHECK_FALSE(PrepareSocketPath(d).ok());
  // A symlink to a stale socket is not followed, and not removed.
  const std::string target = dir.Path("real.sock");
  ::close(BindAt(target, false));
  const std::string link = dir.Path("link.sock");
  std::filesystem::create_symlink(target, link);
  auto plan = PrepareSocketPath(link);
  REQUIRE_FALSE(plan.ok());
  CHECK_THAT(std::string(plan.status().message()), Contains("not a socket"));
  CHECK(IsSocket(target));
}

TEST_CASE("PrepareSocketPath refuses a parent that is not a directory", "[socket][negative]") {
  TempDir dir;
  const std::string file = dir.Write("file", "x");
  auto plan = PrepareSocketPath(file + "/kms.sock");
  REQUIRE_FALSE(plan.ok());
  CHECK(plan.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(plan.status().message()), Contains("is not a directory"));
}

TEST_CASE("PrepareSocketPath replaces a stale socket", "[socket]") {
  TempDir dir;
  fakes::LogCapture cap;
  const std::string path = dir.Path("kms.sock");
  ::close(BindAt(path, false));  // closed without unlink, as after a crash
  REQUIRE(IsSocket(path));
  auto plan = PrepareSocketPath(path);
  REQUIRE(plan.ok());
  CHECK_FALSE(plan->created_directory);
  CHECK_FALSE(Exists(path));
  auto ev = cap.events("socket.stale");
  REQUIRE(ev.size() == 1);
  CHECK(ev[0]["path"] == path);
}

TEST_CASE("PrepareSocketPath refuses a live socket", "[socket][negative]") {
  TempDir dir;
  const std::string path = dir.Path("kms.sock");
  const int fd = BindAt(path, true);
  auto plan = PrepareSocketPath(path);
  ::close(fd);
  REQUIRE_FALSE(plan.ok());
  CHECK(plan.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(plan.status().message()), Contains("in use"));
  CHECK_THAT(std::string(plan.status().message()), Contains(path));
  CHECK(IsSocket(path));  // left for its owner
}

TEST_CASE("PrepareSocketPath rejects a path too long for sun_path", "[socket][negative]") {
  TempDir dir;
  const size_t limit = sizeof(sockaddr_un{}.sun_path);  // 108 on Linux, NUL included
  const std::string base = dir.path() + "/";
  REQUIRE(base.size() < limit - 1);
  const std::string longest = base + std::string(limit - 1 - base.size(), 's');
  const std::string too_long = longest + "s";
  REQUIRE(longest.size() == limit - 1);
  CHECK(PrepareSocketPath(longest).ok());
  auto plan = PrepareSocketPath(too_long);
  REQUIRE_FALSE(plan.ok());
  CHECK(plan.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(plan.status().message()), Contains("too long"));
  CHECK_FALSE(PrepareSocketPath(dir.path() + "/" + std::string(300, 'x')).ok());
}

TEST_CASE("RemoveSocket removes only a socket", "[socket]") {
  TempDir dir;
  const std::string file = dir.Write("kms.sock", "keep me");
  RemoveSocket(file);
  CHECK(Exists(file));
  const std::string sock = dir.Path("real.sock");
  ::close(BindAt(sock, false));
  RemoveSocket(sock);
  CHECK_FALSE(Exists(sock));
  RemoveSocket(dir.Path("absent.sock"));  // nothing there: no error
  const std::string d = dir.Path("d.sock");
  std::filesystem::create_directory(d);
  RemoveSocket(d);
  CHECK(Exists(d));
}

TEST_CASE("SocketLost tells a deleted or replaced socket from ours", "[socket]") {
  TempDir dir;
  const std::string path = dir.Path("kms.sock");
  CHECK_FALSE(SocketIdentity(path).ok());  // nothing there yet
  int fd = BindAt(path, true);
  auto id = SocketIdentity(path);
  REQUIRE(id.ok());
  CHECK(SocketLost(path, *id).empty());
  CHECK(SocketLost(path, *id).empty());  // asking twice changes nothing
  ::unlink(path.c_str());
  CHECK(SocketLost(path, *id) == "deleted");
  const int other = BindAt(path, true);  // another socket at the same path
  CHECK(SocketLost(path, *id) == "replaced by another socket");
  ::close(other);
  ::unlink(path.c_str());
  dir.Write("kms.sock", "not a socket");
  CHECK(SocketLost(path, *id) == "replaced by another file");
  ::unlink(path.c_str());
  std::filesystem::create_directory(path);
  CHECK(SocketLost(path, *id) == "replaced by another file");
  ::close(fd);
}

TEST_CASE("SecureSocket sets the mode and group", "[socket]") {
  TempDir dir;
  const std::string path = dir.Path("sub/kms.sock");
  auto plan = PrepareSocketPath(path);
  REQUIRE(plan.ok());
  const int fd = BindAt(path, true);
  auto st = SecureSocket(path, *plan, 0660, ::getegid(), std::nullopt, std::nullopt);
  ::close(fd);
  REQUIRE(st.ok());
  struct stat sb {};
  REQUIRE(::lstat(path.c_str(), &sb) == 0);
  CHECK((sb.st_mode & 07777) == 0660);
  CHECK(sb.st_gid == ::getegid());
  CHECK(SecureSocket(path, *plan, 0600, std::nullopt, std::nullopt, std::nullopt).ok());
  REQUIRE(::lstat(path.c_str(), &sb) == 0);
  CHECK((sb.st_mode & 07777) == 0600);
  // The directory we made goes to the runtime user (here: ourselves).
  CHECK(SecureSocket(path, *plan, 0600, std::nullopt, ::geteuid(), ::getegid()).ok());
  struct stat db {};
  REQUIRE(::stat(dir.Path("sub").c_str(), &db) == 0);
  CHECK(db.st_uid == ::geteuid());
}

TEST_CASE("SecureSocket on a missing socket names it", "[socket][negative]") {
  TempDir dir;
  const std::string path = dir.Path("missing.sock");
  auto st = SecureSocket(path, SocketPlan{}, 0600, std::nullopt, std::nullopt, std::nullopt);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(std::string(st.message()), Contains(path));
}

}  // namespace
}  // namespace trousseau::kms
