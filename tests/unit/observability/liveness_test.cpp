// /livez's check: a real v2 Status round trip to a gRPC server on a Unix socket, cached briefly,
// and not counted in the KMS metrics.
#include <catch2/catch.hpp>

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <thread>

#include "fakes/fake_key_service.h"
#include "fakes/temp_dir.h"
#include "kms/services.h"
#include "kms/status_loop.h"
#include "observability/metrics.h"
#include "observability/probes.h"

using namespace trousseau;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

// A KMS server with its Status loop; the loop is declared last, so it is destroyed first.
struct KmsServer {
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<kms::StatusLoop> loop;
  grpc::Server* operator->() { return server.get(); }
};

KmsServer StartServer(const std::string& sock, kms::V2Service& v2) {
  KmsServer s;
  s.loop = std::make_unique<kms::StatusLoop>(&v2, nullptr);
  grpc::ServerBuilder b;
  b.AddListeningPort("unix:" + sock, grpc::InsecureServerCredentials());
  b.RegisterService(&v2);
  s.loop->AddTo(b);
  s.server = b.BuildAndStart();
  REQUIRE(s.server != nullptr);
  REQUIRE(s.loop->Start(*s.server).ok());
  return s;
}

}  // namespace

TEST_CASE("liveness answers from a Status round trip, whatever the Vault health") {
  fakes::TempDir dir;
  const std::string sock = dir.Path("kms.sock");
  fakes::FakeKeyService keys;
  keys.SetHealth({"last Vault check failed: connection refused", ""});  // Vault down
  kms::V2Service v2(keys);
  auto server = StartServer(sock, v2);

  observability::LivenessChecker live(sock, 2000ms, 200ms);
  auto r = live.Check();
  INFO(r.text);
  CHECK(r.ok);
  CHECK(keys.health_calls() >= 1);  // the server's Status handler really ran

  // Within the cache period the answer is reused: no second round trip.
  const int calls = keys.health_calls();
  CHECK(live.Check().ok);
  CHECK(keys.health_calls() == calls);

  // The probe's Status calls are not KMS traffic.
  CHECK_THAT(metrics::Exposition(), !Contains("method=\"Status\""));

  // The server stops answering: after the cache period the probe fails, within its deadline.
  server->Shutdown(std::chrono::system_clock::now() + 1s);
  server->Wait();
  std::this_thread::sleep_for(250ms);
  const auto t0 = std::chrono::steady_clock::now();
  r = live.Check();
  CHECK_FALSE(r.ok);
  CHECK_THAT(r.text, Contains("gRPC Status over the KMS socket failed"));
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);

  // And recovers when the server is back.
  fakes::FakeKeyService keys2;
  kms::V2Service v2b(keys2);
  auto again = StartServer(sock, v2b);
  bool ok = false;
  for (int i = 0; i < 50 && !ok; ++i) {
    std::this_thread::sleep_for(250ms);
    ok = live.Check().ok;
  }
  CHECK(ok);
  again->Shutdown();
  again->Wait();
}
