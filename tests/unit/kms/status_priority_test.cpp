// StatusLoop::SetRealtimePriority (performance.status_thread_realtime_priority): the loop's own
// thread, and only it, is put under SCHED_FIFO with SCHED_RESET_ON_FORK; when the kernel refuses,
// the loop still serves and RealtimeResult() says why. Checked through the kernel's view of the
// thread (sched_getscheduler on its thread id), over a real in-process gRPC server.
#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "fakes/fake_key_service.h"
#include "fakes/temp_dir.h"
#include "kms/services.h"
#include "kms/status_loop.h"

namespace trousseau::kms {
namespace {

using Catch::Contains;

// Thread ids of this process whose name (comm) is `name`.
std::vector<pid_t> ThreadsNamed(const std::string& name) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc/self/task");
  REQUIRE(d != nullptr);
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string comm;
    std::getline(f, comm);
    if (comm == name) out.push_back(static_cast<pid_t>(std::stol(e->d_name)));
  }
  closedir(d);
  return out;
}

struct LoopServer {
  fakes::TempDir dir;
  fakes::FakeKeyService keys;
  V2Service v2{keys};
  V1Beta1Service v1{keys, "0.1.0-test"};
  std::unique_ptr<grpc::Server> server;
  StatusLoop loop{&v2, &v1};  // destroyed before the server
  std::unique_ptr<::v2::KeyManagementService::Stub> stub;

  explicit LoopServer(int priority) {
    keys.SetHealth({"ok", "transit/k:v1"});
    const std::string addr = "unix:" + dir.Path("kms.sock");
    grpc::ServerBuilder b;
    b.AddListeningPort(addr, grpc::InsecureServerCredentials());
    b.RegisterService(&v2);
    b.RegisterService(&v1);
    loop.SetRealtimePriority(priority);
    loop.AddTo(b);
    server = b.BuildAndStart();
    REQUIRE(server != nullptr);
    REQUIRE(loop.Start(*server).ok());
    stub = ::v2::KeyManagementService::NewStub(
        grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
  }
  ~LoopServer() {
    server->Shutdown();
    server->Wait();
    loop.Stop();
  }
  bool StatusAnswers() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ::v2::StatusResponse resp;
    return stub->Status(&ctx, ::v2::StatusRequest{}, &resp).ok() && resp.healthz() == "ok";
  }
};

bool MaySetRealtime(int priority) {
  if (geteuid() == 0) return true;  // CAP_SYS_NICE, unless a cgroup forbids it (then skip)
  rlimit rl{};
  return getrlimit(RLIMIT_RTPRIO, &rl) == 0 && rl.rlim_cur >= static_cast<rlim_t>(priority);
}

TEST_CASE("the status loop's thread alone gets SCHED_FIFO with reset-on-fork", "[kms][status_loop]") {
  if (!MaySetRealtime(3)) {
    WARN("skipped: neither root nor RLIMIT_RTPRIO >= 3");
    return;
  }
  LoopServer s(3);
  if (!s.loop.RealtimeResult().ok()) {
    // Root in a cgroup without a real-time budget: the refusal is the other test's subject.
    WARN("skipped: " << s.loop.RealtimeResult().message());
    return;
  }
  const auto tids = ThreadsNamed("kms-status");
  REQUIRE(tids.size() == 1);
  CHECK(sched_getscheduler(tids[0]) == (SCHED_FIFO | SCHED_RESET_ON_FORK));
  sched_param p{};
  REQUIRE(sched_getparam(tids[0], &p) == 0);
  CHECK(p.sched_priority == 3);
  // The thread that started the loop (and every other one) keeps the normal scheduler.
  CHECK(sched_getscheduler(0) == SCHED_OTHER);
  CHECK(s.StatusAnswers());
}

TEST_CASE("priority 0 leaves the status loop's thread under the normal scheduler", "[kms][status_loop]") {
  LoopServer s(0);
  CHECK(s.loop.RealtimeResult().ok());
  const auto tids = ThreadsNamed("kms-status");
  REQUIRE(tids.size() == 1);
  CHECK(sched_getscheduler(tids[0]) == SCHED_OTHER);
  CHECK(s.StatusAnswers());
}

TEST_CASE("a priority the kernel refuses leaves the loop serving and says why",
          "[kms][status_loop][negative]") {
  // 100 is above SCHED_FIFO's maximum (99): refused with EINVAL, privileged or not. (The
  // config refuses it earlier; this is the loop's own fallback path.)
  LoopServer s(100);
  REQUIRE_FALSE(s.loop.RealtimeResult().ok());
  CHECK_THAT(std::string(s.loop.RealtimeResult().message()),
             Contains("sched_setscheduler(SCHED_FIFO, 100): Invalid argument"));
  const auto tids = ThreadsNamed("kms-status");
  REQUIRE(tids.size() == 1);
  CHECK(sched_getscheduler(tids[0]) == SCHED_OTHER);
  CHECK(s.StatusAnswers());
}

TEST_CASE("without the privilege the refusal names CAP_SYS_NICE", "[kms][status_loop][negative]") {
  if (MaySetRealtime(1)) {
    // As root this path is covered by tests/integration/test_status_priority.py, which starts
    // the plugin without CAP_SYS_NICE.
    SUCCEED("privileged here");
    return;
  }
  LoopServer s(1);
  REQUIRE_FALSE(s.loop.RealtimeResult().ok());
  CHECK_THAT(std::string(s.loop.RealtimeResult().message()), Contains("Operation not permitted"));
  CHECK_THAT(std::string(s.loop.RealtimeResult().message()), Contains("CAP_SYS_NICE"));
  CHECK(s.StatusAnswers());
}

}  // namespace
}  // namespace trousseau::kms
