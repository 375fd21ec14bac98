#include "kms/status_loop.h"

#include <pthread.h>
#include <sched.h>

#include <cerrno>
#include <cstring>

#include <grpcpp/grpcpp.h>

#include <string>
#include <system_error>

namespace trousseau::kms {

namespace {

// SCHED_FIFO for the calling thread only (pid 0 is the caller's thread id for this call).
absl::Status ApplyRealtime(int priority) {
  if (priority <= 0) return absl::OkStatus();
  sched_param param{};
  param.sched_priority = priority;
  if (sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &param) == 0) return absl::OkStatus();
  const int err = errno;
  std::string why = std::string("sched_setscheduler(SCHED_FIFO, ") + std::to_string(priority) +
                    "): " + std::strerror(err);
  if (err == EPERM) {
    why += " (needs CAP_SYS_NICE when the plugin starts, or RLIMIT_RTPRIO >= " +
           std::to_string(priority) +
           "; a cgroup without a real-time CPU budget refuses it even to root)";
  }
  return absl::PermissionDeniedError(why);
}

}  // namespace

// One Status or Version call: from its request posted to the queue until its answer was sent
// (or the call ended unanswered at shutdown). The tag on the queue is the Call itself.
struct StatusLoop::Call {
  explicit Call(Method m) : method(m) {}
  const Method method;
  bool answered = false;  // its Finish is on the queue: the next tag is the last
  grpc::ServerContext ctx;
  ::v2::StatusRequest status_req;
  ::v2::StatusResponse status_resp;
  grpc::ServerAsyncResponseWriter<::v2::StatusResponse> status_writer{&ctx};
  ::v1beta1::VersionRequest version_req;
  ::v1beta1::VersionResponse version_resp;
  grpc::ServerAsyncResponseWriter<::v1beta1::VersionResponse> version_writer{&ctx};
};

void StatusLoop::AddTo(grpc::ServerBuilder& builder) {
  if (!cq_) cq_ = builder.AddCompletionQueue(/*is_frequently_polled=*/true);
}

absl::Status StatusLoop::Start(grpc::Server& server) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cq_) return absl::FailedPreconditionError("the status loop's queue was not added to the server");
    if (started_ || stopping_) return absl::FailedPreconditionError("the status loop was already started");
    try {
      thread_ = std::thread([this] { Run(); });
    } catch (const std::system_error& e) {
      return absl::ResourceExhaustedError(std::string("cannot start the Status/Version thread: ") +
                                          e.what());
    }
    started_ = true;
    server_ = &server;
  }
  // Back only once the requests are posted: the caller may shut the server down and destroy it
  // right after, and a request must never reach a destroyed server.
  std::unique_lock<std::mutex> lock(mu_);
  posted_cv_.wait(lock, [this] { return posted_; });
  return absl::OkStatus();
}

void StatusLoop::Request(Method m) {
  auto call = std::make_unique<Call>(m);
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return;
  Call* c = call.release();  // owned by the queue until its tag comes back
  if (m == Method::kStatus) {
    v2_->RequestStatus(&c->ctx, &c->status_req, &c->status_writer, cq_.get(), cq_.get(), c);
  } else {
    v1_->RequestVersion(&c->ctx, &c->version_req, &c->version_writer, cq_.get(), cq_.get(), c);
  }
}

void StatusLoop::Run() {
  pthread_setname_np(pthread_self(), "kms-status");  // prctl(PR_SET_NAME): in the allowlist
  // Before posted_: Start()'s caller reads the result once Start returns, while it still has
  // the privilege (before the drop and the seccomp filter, which does not allow this call).
  rt_result_ = ApplyRealtime(rt_priority_);
  // The first requests are posted here, not by Start()'s caller: every request object is then
  // made and completed on this thread. (gRPC's queue hands it between threads through
  // synchronisation ThreadSanitizer cannot see in Debian's uninstrumented gRPC.) Until they
  // are posted, a call waits in gRPC for them.
  if (v2_ != nullptr) Request(Method::kStatus);
  if (v1_ != nullptr) Request(Method::kVersion);
  {
    std::lock_guard<std::mutex> lock(mu_);
    posted_ = true;
  }
  posted_cv_.notify_all();
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) {
    std::unique_ptr<Call> c(static_cast<Call*>(tag));
    // The answer was sent (ok) or the call ended before it could be (cancelled, shutdown); or
    // a request the server ended unmatched because it is shutting down: nothing more to do.
    if (c->answered || !ok) continue;
    // A new call. The next one of this method can be matched while this one is answered; it
    // waits in gRPC until then. A call the client already cancelled is answered and counted
    // like any other (as the callback handlers did); its Finish comes back not ok.
    Request(c->method);
    c->answered = true;
    if (c->method == Method::kStatus) {
      v2_->AnswerStatus(c->ctx, &c->status_resp);
    } else {
      v1_->AnswerVersion(&c->version_resp);
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) continue;  // unreachable when the server was shut down first; freed here
    Call* raw = c.release();
    if (raw->method == Method::kStatus) {
      raw->status_writer.Finish(raw->status_resp, grpc::Status::OK, raw);
    } else {
      raw->version_writer.Finish(raw->version_resp, grpc::Status::OK, raw);
    }
  }
}

void StatusLoop::Stop() {
  grpc::Server* server = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    server = started_ ? server_ : nullptr;
  }
  // The server first: its shutdown ends the requests we posted (their tags come back not ok);
  // our thread keeps answering until then. Only then may the queue shut down.
  if (server != nullptr) server->Shutdown();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (cq_) cq_->Shutdown();
  }
  if (thread_.joinable()) {
    thread_.join();  // Run() returns once the queue is shut down and empty
  } else if (cq_) {
    void* tag = nullptr;
    bool ok = false;
    while (cq_->Next(&tag, &ok)) delete static_cast<Call*>(tag);
  }
}

}  // namespace trousseau::kms
