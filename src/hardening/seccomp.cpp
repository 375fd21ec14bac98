#include "hardening/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <ucontext.h>
#include <openssl/crypto.h>  // OPENSSL_IS_BORINGSSL
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

namespace trousseau::hardening {
namespace {

// The TLS flavor a rule is for (issue 11: -DTROUSSEAU_TLS=openssl|boringssl). One table holds
// both; the rules of the other flavor are dropped when the table is built.
enum class Tls { kAny, kOpenSsl, kBoringSsl };
#if defined(OPENSSL_IS_BORINGSSL)
constexpr Tls kBuiltTls = Tls::kBoringSsl;
#else
constexpr Tls kBuiltTls = Tls::kOpenSsl;
#endif

// One rule: a syscall name and, optionally, argument comparisons that must all hold.
struct Rule {
  const char* name;
  std::vector<scmp_arg_cmp> args;  // empty: unconditional
  Tls tls = Tls::kAny;             // only in this flavor's allowlist
  // Only with a state directory (ApplySeccomp's state_dir_fd), and only relative to it: the
  // comparisons on that descriptor are added when the filter is built.
  enum class Dir { kNone, kArg0, kArg0And2 } state_dir = Dir::kNone;
};

struct Group {
  const char* purpose;
  std::vector<Rule> rules;
};

constexpr scmp_datum_t kWriteFlags = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;

// The allowlist, grouped by why each call is needed. Anything else is fatal.
std::vector<Group> AllFlavors() {
  return {
      {"memory: allocator, SecretBuffer pages (mlock, MADV_DONTDUMP); never executable",
       {{"brk", {}},
        {"mmap", {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)}},
        {"mprotect", {SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)}},
        {"munmap", {}},
        {"mremap", {}},
        {"madvise", {}},
        {"mlock", {}},
        {"munlock", {}}}},
      {"threads: gRPC and libcurl worker threads, locks, thread names",
       {{"futex", {}},
        {"clone", {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)}},  // threads, never fork
        {"set_robust_list", {}},
        {"rseq", {}},
        {"sched_yield", {}},
        {"sched_getaffinity", {}},
        {"sched_getparam", {}},
        {"sched_getscheduler", {}},
        {"gettid", {}},
        {"membarrier", {}},
        {"prctl", {SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME)}},
        {"prctl", {SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME)}},
        {"exit", {}},
        {"exit_group", {}}}},
      {"signals: SIGTERM via sigwait, abort() to our own process only",
       {{"rt_sigprocmask", {}},
        {"rt_sigaction", {}},
        {"rt_sigreturn", {}},
        {"rt_sigtimedwait", {}},
        {"sigaltstack", {}},
        {"restart_syscall", {}},
        {"getpid", {}},
        {"tgkill", {}}}},  // narrowed to our pid when the filter is built
      {"time: deadlines, timers, log timestamps",
       {{"clock_gettime", {}},
        {"clock_getres", {}},
        {"gettimeofday", {}},
        {"clock_nanosleep", {}},
        {"nanosleep", {}}}},
      {"files: re-reading the token file and resolver config, read-only",
       {{"openat", {SCMP_A2(SCMP_CMP_MASKED_EQ, kWriteFlags, 0)}},
        {"read", {}},
        {"pread64", {}},
        {"readv", {}},
        {"close", {}},
        {"fstat", {}},
        {"newfstatat", {}},
        {"statx", {}},
        {"lseek", {}},
        {"fcntl", {}},
        {"access", {}},
        {"faccessat", {}},
        {"faccessat2", {}},
        {"unlink", {}}}},  // removing our socket at shutdown
      {"state file (state.file, docs/rollback.md): create, rename, remove and fsync files only in "
       "the directory opened at start, by its descriptor; absent without state.file",
       {{"openat", {}, Tls::kAny, Rule::Dir::kArg0},
        {"renameat", {}, Tls::kAny, Rule::Dir::kArg0And2},
        {"renameat2", {}, Tls::kAny, Rule::Dir::kArg0And2},
        {"unlinkat", {}, Tls::kAny, Rule::Dir::kArg0},
        {"fsync", {}, Tls::kAny, Rule::Dir::kNone}}},  // fsync is harmless on any descriptor
      {"output: logs to stderr, socket writes",
       {{"write", {}}, {"writev", {}}}},
      {"event loops: gRPC's epoll engine, libcurl's poll, wakeup fds",
       {{"epoll_create1", {}},
        {"epoll_ctl", {}},
        {"epoll_wait", {}},
        {"epoll_pwait", {}},
        {"poll", {}},
        {"ppoll", {}},
        {"eventfd2", {}},
        {"pipe2", {}}}},
      {"sockets: KMS clients on the Unix socket, HTTPS to Vault, DNS and netlink for the resolver",
       {{"socket", {SCMP_A0(SCMP_CMP_EQ, AF_UNIX)}},
        {"socket", {SCMP_A0(SCMP_CMP_EQ, AF_INET)}},
        {"socket", {SCMP_A0(SCMP_CMP_EQ, AF_INET6)}},
        {"socket", {SCMP_A0(SCMP_CMP_EQ, AF_NETLINK)}},
        {"socketpair", {SCMP_A0(SCMP_CMP_EQ, AF_UNIX)}},
        {"accept4", {}},
        {"connect", {}},
        {"bind", {}},  // netlink sockets of getaddrinfo; the KMS socket is bound before the filter
        {"getsockname", {}},
        {"getpeername", {}},
        {"getsockopt", {}},
        {"setsockopt", {}},
        {"sendto", {}},
        {"recvfrom", {}},
        {"sendmsg", {}},
        {"recvmsg", {}},
        {"sendmmsg", {}},
        {"shutdown", {}}}},
      // The listener's socket, bind, listen and threads are created before the filter; serving
      // needs accept(2) (civetweb calls accept, not accept4), recv/send (recvfrom/sendto),
      // poll, setsockopt and shutdown, all allowed above. /metrics counts /proc/self/fd.
      {"operations listener (civetweb): probe and scrape connections; process metrics",
       {{"accept", {}},
        {"getdents64", {}}}},
      {"entropy and identity: TLS randomness, resource limits",
       {{"getrandom", {}},
        {"getuid", {}},
        {"geteuid", {}},
        {"getgid", {}},
        {"getegid", {}},
        {"uname", {}},
        {"sysinfo", {}},
        {"prlimit64", {SCMP_A2(SCMP_CMP_EQ, 0)}}}},  // read limits only, never set them
  };
}

// The built flavor's allowlist: AllFlavors() without the other flavor's rules.
const std::vector<Group>& Groups() {
  static const std::vector<Group> groups = [] {
    std::vector<Group> out = AllFlavors();
    for (auto& g : out) {
      std::erase_if(g.rules, [](const Rule& r) { return r.tls != Tls::kAny && r.tls != kBuiltTls; });
    }
    return out;
  }();
  return groups;
}

void LogTrap(int /*sig*/, siginfo_t* info, void* ctx) {
  // Async-signal-safe: format the number by hand, write(2), then fail the call with ENOSYS.
  char line[96] = "trousseau: seccomp: syscall ";
  size_t n = std::strlen(line);
  char digits[16];
  int nd = 0;
  unsigned v = static_cast<unsigned>(info->si_syscall);
  do {
    digits[nd++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && nd < 15);
  while (nd > 0) line[n++] = digits[--nd];
  const char* tail = " is not in the allowlist (log mode: failing it with ENOSYS)\n";
  const size_t tl = std::strlen(tail);
  std::memcpy(line + n, tail, std::min(tl, sizeof(line) - n - 1));
  n += std::min(tl, sizeof(line) - n - 1);
  ssize_t ignored = write(STDERR_FILENO, line, n);
  (void)ignored;
  auto* uc = static_cast<ucontext_t*>(ctx);
  uc->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
}

}  // namespace

const std::vector<SeccompRuleInfo>& SeccompAllowlist() {
  static const std::vector<SeccompRuleInfo> list = [] {
    std::vector<SeccompRuleInfo> out;
    for (const auto& g : Groups()) {
      for (const auto& r : g.rules) {
        bool dup = false;
        for (auto& o : out) {
          if (o.syscall == r.name) {
            dup = true;
            o.conditional = o.conditional || !r.args.empty();
          }
        }
        if (!dup) out.push_back({r.name, g.purpose, !r.args.empty() || r.state_dir != Rule::Dir::kNone});
      }
    }
    return out;
  }();
  return list;
}

const std::vector<std::string>& StartupSyscalls() {
  static const std::vector<std::string> list = {
      // the runtime starts us; the loader maps libraries
      "execve", "arch_prctl", "set_tid_address", "readlink", "getcwd",
      // socket directory and socket: created, owned and moded before the drop
      "mkdir", "mkdirat", "umask", "chmod", "fchmodat", "chown", "fchownat", "fchown",
      "unlinkat", "listen", "getdents64", "ioctl", "dup", "dup2", "dup3", "fstatfs", "statfs",
      // thread creation before our filter (ours forces the clone fallback)
      "clone3",
      // the kms-status thread's SCHED_FIFO (performance.status_thread_realtime_priority)
      "sched_setscheduler",
      // privilege drop and its proof
      "setgroups", "setresuid", "setresgid", "setuid", "setgid", "getresuid", "getresgid",
      "getgroups", "capget", "capset",
      // lock-down: no_new_privs, dumpable, core limit, the filter itself
      "seccomp", "prlimit64", "prctl"};
  return list;
}

std::string RuntimeProfileJson() {
  std::vector<std::string> names;
  for (const auto& r : SeccompAllowlist()) names.push_back(r.syscall);
  for (const auto& s : StartupSyscalls()) names.push_back(s);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  nlohmann::ordered_json profile = {
      {"defaultAction", "SCMP_ACT_ERRNO"},
      {"defaultErrnoRet", 1},
      {"architectures", {"SCMP_ARCH_X86_64"}},
      {"syscalls", {{{"names", names}, {"action", "SCMP_ACT_ALLOW"}}}}};
  return profile.dump(2) + "\n";
}

absl::Status ApplySeccomp(SeccompAction action, int state_dir_fd) {
  const uint32_t deny = action == SeccompAction::kKill ? SCMP_ACT_KILL_PROCESS : SCMP_ACT_TRAP;
  scmp_filter_ctx ctx = seccomp_init(deny);
  if (ctx == nullptr) return absl::InternalError("seccomp: cannot initialise the filter");
  auto fail = [&](const std::string& what, int rc) {
    seccomp_release(ctx);
    return absl::InternalError("seccomp: " + what + ": " + std::strerror(-rc));
  };
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  if (rc != 0) return fail("refusing foreign architectures", rc);
  rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  if (rc != 0) return fail("enabling TSYNC", rc);
  rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
  if (rc != 0) return fail("requiring no_new_privs", rc);

  // clone3 passes its flags in memory a filter cannot read: make it fail with ENOSYS, so glibc
  // falls back to clone(2), whose flags are checked above.
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc != 0) return fail("clone3 fallback", rc);

  const scmp_datum_t self = static_cast<scmp_datum_t>(getpid());
  for (const auto& g : Groups()) {
    for (const auto& r : g.rules) {
      const int nr = seccomp_syscall_resolve_name(r.name);
      if (nr == __NR_SCMP_ERROR) return fail(std::string("unknown syscall ") + r.name, -EINVAL);
      std::vector<scmp_arg_cmp> args = r.args;
      if (std::strcmp(r.name, "tgkill") == 0) args.push_back(SCMP_A0(SCMP_CMP_EQ, self));
      const bool state_group = std::strstr(g.purpose, "state file") == g.purpose;
      if (state_group && state_dir_fd < 0) continue;  // no state.file: none of these calls
      if (r.state_dir != Rule::Dir::kNone) {
        const auto fd = static_cast<scmp_datum_t>(state_dir_fd);
        args.push_back(SCMP_A0(SCMP_CMP_EQ, fd));
        if (r.state_dir == Rule::Dir::kArg0And2) args.push_back(SCMP_A2(SCMP_CMP_EQ, fd));
      }
      rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, static_cast<unsigned>(args.size()),
                                  args.empty() ? nullptr : args.data());
      if (rc != 0) return fail(std::string("adding ") + r.name, rc);
    }
  }

  if (action == SeccompAction::kLogTrap) {
    struct sigaction sa {};
    sa.sa_sigaction = &LogTrap;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, nullptr) != 0) return fail("installing the SIGSYS handler", -errno);
  }
  rc = seccomp_load(ctx);
  seccomp_release(ctx);
  if (rc != 0) return absl::InternalError(std::string("seccomp: loading the filter: ") + std::strerror(-rc));
  return absl::OkStatus();
}

}  // namespace trousseau::hardening
