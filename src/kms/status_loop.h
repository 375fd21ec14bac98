// Status (v2) and Version (v1beta1) on gRPC's async API: one completion queue, drained by one
// thread of ours that answers from memory (V2Service::AnswerStatus, V1Beta1Service::AnswerVersion).
// Encrypt and Decrypt stay on the sync server (a hybrid server). Why not callback methods: as
// soon as one method is a callback method, gRPC starts its own "nexting" threads for the callback
// completion queue, which took 13.5 % of the plugin's CPU under Encrypt/Decrypt load
// (docs/performance.md, change 13).
#pragma once

#include <grpcpp/completion_queue.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "kms/services.h"

namespace trousseau::kms {

// Order of use:
//   std::unique_ptr<grpc::Server> server;  // declared before the loop: the loop is destroyed first
//   StatusLoop loop(&v2, &v1);
//   builder.RegisterService(&v2); ...; loop.AddTo(builder);
//   server = builder.BuildAndStart();
//   loop.Start(*server);                   // before the seccomp filter (it creates a thread)
//   ...
//   server->Shutdown(); server->Wait();    // the requests posted end (their tags come back not ok)
//   loop.Stop();                           // the queue shut down, every tag drained, the thread joined
// The server must still exist when Stop() runs: a request's tag still in the queue refers to
// it. Stop() (and the destructor, which calls it) shuts the server down first if that was not
// done, so a loop destroyed before its server is always safe.
class StatusLoop {
 public:
  // Either service may be null (not served). Both must outlive the loop.
  StatusLoop(V2Service* v2, V1Beta1Service* v1) : v2_(v2), v1_(v1) {}
  ~StatusLoop() { Stop(); }
  StatusLoop(const StatusLoop&) = delete;
  StatusLoop& operator=(const StatusLoop&) = delete;

  // Before Start: the thread puts itself under SCHED_FIFO at this priority (1..99; 0, the
  // default, leaves it under the normal scheduler) before it posts its first requests, with
  // SCHED_RESET_ON_FORK so that no thread it might start inherits the policy. Needs
  // CAP_SYS_NICE (or RLIMIT_RTPRIO): the caller starts the loop before it drops privileges.
  // Failing to get it is not an error: the loop runs at normal priority and
  // RealtimeResult() says why (docs/performance.md, change 15).
  void SetRealtimePriority(int priority) { rt_priority_ = priority; }
  // After Start: OK when the priority was applied (or none was asked for), else why not.
  const absl::Status& RealtimeResult() const { return rt_result_; }

  // Adds the loop's completion queue to the server. Before BuildAndStart, once.
  void AddTo(grpc::ServerBuilder& builder);
  // After BuildAndStart succeeded: starts the thread ("kms-status"), which posts one request
  // per method, and returns once they are posted. An error when AddTo was not called, it was
  // already started, or no thread could be made. `server` must outlive the loop.
  absl::Status Start(grpc::Server& server);
  // Shuts the server down (a no-op when the caller already did) and then the queue, frees every
  // call still in it and joins the thread. Idempotent.
  void Stop();

 private:
  struct Call;
  enum class Method { kStatus, kVersion };
  // Posts a request for the next call of `m`; nothing once stopping.
  void Request(Method m);
  void Run();

  V2Service* v2_;
  V1Beta1Service* v1_;
  grpc::Server* server_ = nullptr;  // set by Start
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  // Guards every operation that adds work to cq_ against its shutdown: gRPC aborts on an
  // operation started on a queue already shut down.
  std::mutex mu_;
  std::condition_variable posted_cv_;
  bool posted_ = false;  // the thread has posted its first requests
  bool started_ = false;
  bool stopping_ = false;
  int rt_priority_ = 0;
  absl::Status rt_result_;  // written by the thread before posted_, read after Start

};

}  // namespace trousseau::kms
