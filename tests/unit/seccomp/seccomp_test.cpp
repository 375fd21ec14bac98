// The in-process filter, applied in forked children so the test runner stays unfiltered.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <set>
#include <string>

#include "hardening/seccomp.h"

using trousseau::hardening::ApplySeccomp;
using trousseau::hardening::SeccompAction;

namespace {

// Runs `body` in a child after loading the filter; returns the raw wait status.
int RunFiltered(SeccompAction action, const std::function<int()>& body) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!ApplySeccomp(action).ok()) _exit(90);
    _exit(body());
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return status;
}

bool KilledBySigsys(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS; }
int ExitCode(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status); }

}  // namespace

TEST_CASE("allowed calls keep working under the filter") {
  int st = RunFiltered(SeccompAction::kKill, [] {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return 1;
    if (write(fds[1], "x", 1) != 1) return 2;
    char c = 0;
    if (read(fds[0], &c, 1) != 1 || c != 'x') return 3;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (s < 0) return 4;
    close(s);
    int f = open("/etc/hosts", O_RDONLY | O_CLOEXEC);  // resolver config stays readable
    if (f < 0) return 5;
    close(f);
    return 0;
  });
  CHECK(ExitCode(st) == 0);
}

TEST_CASE("a syscall outside the allowlist kills the process with SIGSYS") {
  CHECK(KilledBySigsys(RunFiltered(SeccompAction::kKill, [] {
    ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    return 0;
  })));
  CHECK(KilledBySigsys(RunFiltered(SeccompAction::kKill, [] {
    syscall(SYS_execve, "/bin/true", nullptr, nullptr);
    return 0;
  })));
}

TEST_CASE("argument filters narrow socket, open and mmap") {
  SECTION("a packet socket is refused") {
    CHECK(KilledBySigsys(RunFiltered(SeccompAction::kKill, [] {
      socket(AF_PACKET, SOCK_RAW, 0);
      return 0;
    })));
  }
  SECTION("opening a file for writing is refused") {
    CHECK(KilledBySigsys(RunFiltered(SeccompAction::kKill, [] {
      open("/tmp/trousseau-seccomp-test", O_WRONLY | O_CREAT, 0600);
      return 0;
    })));
  }
  SECTION("executable memory is refused") {
    CHECK(KilledBySigsys(RunFiltered(SeccompAction::kKill, [] {
      mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      return 0;
    })));
  }
  SECTION("fork (clone without CLONE_THREAD) is refused") {
    CHECK(KilledBySigsys(RunFiltered(SeccompAction::kKill, [] {
      syscall(SYS_clone, SIGCHLD, nullptr, nullptr, nullptr, 0);
      return 0;
    })));
  }
  SECTION("clone3 fails with ENOSYS so glibc falls back to clone") {
    CHECK(ExitCode(RunFiltered(SeccompAction::kKill, [] {
      long rc = syscall(SYS_clone3, nullptr, 0);
      return (rc == -1 && errno == ENOSYS) ? 0 : 1;
    })) == 0);
  }
}

TEST_CASE("log mode traps, reports and fails the call instead of killing") {
  int st = RunFiltered(SeccompAction::kLogTrap, [] {
    long rc = ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
    return (rc == -1 && errno == ENOSYS) ? 0 : 1;
  });
  CHECK(ExitCode(st) == 0);
}

TEST_CASE("the allowlist is grouped and has no dangerous calls") {
  const auto& rules = trousseau::hardening::SeccompAllowlist();
  REQUIRE(rules.size() > 40);
  std::set<std::string> names;
  for (const auto& r : rules) {
    CHECK(!r.group.empty());
    names.insert(r.syscall);
  }
  for (const char* bad : {"ptrace", "execve", "execveat", "fork", "vfork", "process_vm_readv",
                          "process_vm_writev", "mount", "setns", "unshare", "bpf", "kexec_load",
                          "init_module", "finit_module", "perf_event_open", "userfaultfd",
                          "keyctl", "setuid", "setresuid", "capset", "seccomp", "listen"}) {
    INFO(bad);
    CHECK(names.count(bad) == 0);
  }
}

TEST_CASE("the runtime profile covers the allowlist plus a bounded startup set") {
  const std::string json = trousseau::hardening::RuntimeProfileJson();
  for (const auto& r : trousseau::hardening::SeccompAllowlist()) {
    INFO(r.syscall);
    CHECK(json.find("\"" + r.syscall + "\"") != std::string::npos);
  }
  CHECK(trousseau::hardening::StartupSyscalls().size() < 40);
  CHECK(json.find("\"ptrace\"") == std::string::npos);
  CHECK(json.find("SCMP_ARCH_X86_64") != std::string::npos);
}
