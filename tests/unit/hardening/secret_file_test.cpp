// Secret files: read straight into a SecretBuffer with a size cap, only regular files, errors
// that name the path; TrimSecret strips the newline tools write after tokens.
#include "hardening/secret_file.h"

#include <sys/stat.h>
#include <grp.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "fakes/temp_dir.h"

namespace trousseau {
namespace {

using Catch::Contains;
using fakes::TempDir;

TEST_CASE("ReadSecretFile reads the whole file and reports its identity", "[secret_file]") {
  TempDir dir;
  const std::string p = dir.Write("token", "hvs.abc\n");
  FileIdentity id;
  auto buf = ReadSecretFile(p, 1024, &id);
  REQUIRE(buf.ok());
  CHECK(buf->view() == "hvs.abc\n");
  CHECK(id.size == 8);
  CHECK(id.ino != 0);
  auto st = StatFile(p);
  REQUIRE(st.ok());
  CHECK(*st == id);
}

TEST_CASE("ReadSecretFile reads files larger than one page", "[secret_file]") {
  TempDir dir;
  std::string big;
  for (int i = 0; i < 20000; ++i) big.push_back(static_cast<char>('a' + i % 26));
  const std::string p = dir.Write("big", big);
  auto buf = ReadSecretFile(p, big.size());
  REQUIRE(buf.ok());
  CHECK(buf->view() == big);
}

TEST_CASE("ReadSecretFile enforces the size cap at exactly max_bytes", "[secret_file][negative]") {
  TempDir dir;
  const std::string exact = dir.Write("exact", std::string(100, 'x'));
  const std::string over = dir.Write("over", std::string(101, 'x'));
  auto ok = ReadSecretFile(exact, 100);
  REQUIRE(ok.ok());
  CHECK(ok->size() == 100);
  auto bad = ReadSecretFile(over, 100);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(bad.status().message()), Contains("too large"));
  CHECK_THAT(std::string(bad.status().message()), Contains("100 bytes"));
  CHECK_THAT(std::string(bad.status().message()), Contains(over));
  // An empty file with a zero cap is fine.
  const std::string empty = dir.Write("empty", "");
  auto e = ReadSecretFile(empty, 0);
  REQUIRE(e.ok());
  CHECK(e->empty());
}

TEST_CASE("ReadSecretFile refuses a directory", "[secret_file][negative]") {
  TempDir dir;
  auto r = ReadSecretFile(dir.path(), 1024);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(r.status().message()), Contains("not a regular file"));
  CHECK_THAT(std::string(r.status().message()), Contains(dir.path()));
}

TEST_CASE("ReadSecretFile refuses a character device", "[secret_file][negative]") {
  auto r = ReadSecretFile("/dev/null", 1024);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(std::string(r.status().message()), Contains("not a regular file: /dev/null"));
}

TEST_CASE("ReadSecretFile refuses a FIFO without waiting for a writer", "[secret_file][negative]") {
  TempDir dir;
  const std::string p = dir.Path("fifo");
  REQUIRE(::mkfifo(p.c_str(), 0600) == 0);
  auto r = ReadSecretFile(p, 1024);  // would block forever if open(2) waited for a writer
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(r.status().message()), Contains("not a regular file"));
}

TEST_CASE("ReadSecretFile on a missing file is NOT_FOUND and names the path",
          "[secret_file][negative]") {
  TempDir dir;
  const std::string p = dir.Path("does-not-exist");
  auto r = ReadSecretFile(p, 1024);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(r.status().message()), Contains(p));
  CHECK_THAT(std::string(r.status().message()), Contains("No such file"));
  auto s = StatFile(p);
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == absl::StatusCode::kNotFound);
  CHECK_THAT(std::string(s.status().message()), Contains(p));
}

TEST_CASE("ReadSecretFile on an unreadable file is PERMISSION_DENIED", "[secret_file][negative]") {
  // Root ignores file modes, so as root (CI) the read runs in a forked child that first drops to
  // an unprivileged uid; otherwise in this process.
  TempDir dir;
  REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);
  const std::string p = dir.Write("secret", "x");
  REQUIRE(::chmod(p.c_str(), 0) == 0);
  auto check = [&p]() -> int {
    auto r = ReadSecretFile(p, 1024);
    if (r.ok()) return 1;
    if (r.status().code() != absl::StatusCode::kPermissionDenied) return 2;
    if (std::string(r.status().message()).find(p) == std::string::npos) return 3;
    return 0;
  };
  if (::geteuid() != 0) {
    CHECK(check() == 0);
    return;
  }
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const uid_t nobody = 65534;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
        ::setresuid(nobody, nobody, nobody) != 0) {
      _exit(10);
    }
    _exit(check());
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  // 1: read anyway; 2: another code; 3: message without the path; 10: could not drop to 65534
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("ReadTextFile returns the text and shares the checks", "[secret_file]") {
  TempDir dir;
  const std::string p = dir.Write("ca.pem", "-----BEGIN X-----\n");
  auto t = ReadTextFile(p, 100);
  REQUIRE(t.ok());
  CHECK(*t == "-----BEGIN X-----\n");
  auto bad = ReadTextFile(p, 3);
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(std::string(bad.status().message()), Contains("too large"));
}

TEST_CASE("StatFile notices a rewrite and a rename-over", "[secret_file]") {
  TempDir dir;
  const std::string p = dir.Write("t", "one");
  auto a = StatFile(p);
  REQUIRE(a.ok());
  dir.Write("t", "three");  // different size
  auto b = StatFile(p);
  REQUIRE(b.ok());
  CHECK_FALSE(*a == *b);
  dir.WriteByRename("t", "fives");  // same size, new inode
  auto c = StatFile(p);
  REQUIRE(c.ok());
  CHECK(c->ino != b->ino);
  CHECK_FALSE(*b == *c);
}

std::string Trimmed(const std::string& in) {
  SecretBuffer b = SecretBuffer::CopyOf(in);
  TrimSecret(b);
  return std::string(b.view());
}

TEST_CASE("TrimSecret strips ASCII whitespace at both ends only", "[secret_file]") {
  CHECK(Trimmed("hvs.token\n") == "hvs.token");
  CHECK(Trimmed("hvs.token\r\n") == "hvs.token");
  CHECK(Trimmed(" \t\r\n hvs.token \t\r\n") == "hvs.token");
  CHECK(Trimmed("no-space") == "no-space");
  CHECK(Trimmed("in side") == "in side");
  CHECK(Trimmed(" \n\t\r ") == "");
  CHECK(Trimmed("") == "");
  CHECK(Trimmed("\vx\f") == "\vx\f");  // only space, tab, CR and LF are whitespace here
  SecretBuffer none;
  TrimSecret(none);
  CHECK(none.empty());
}

TEST_CASE("TrimSecret leaves no copy of the secret past the new end", "[secret_file]") {
  SecretBuffer b = SecretBuffer::CopyOf("   abcdef");
  TrimSecret(b);
  REQUIRE(b.view() == "abcdef");
  // The memmove left "def" at offsets 6..8 of the old content; they must be wiped.
  for (size_t i = 6; i < 9; ++i) CHECK(b.data()[i] == 0);
}

}  // namespace
}  // namespace trousseau
