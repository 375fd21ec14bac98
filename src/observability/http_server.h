// The operations HTTP listener (civetweb): /livez, /readyz, /healthz, /metrics; nothing else.
// Small and bounded on purpose: a fixed pool of worker threads created at Start() (before the
// seccomp filter), keep-alive off, a per-request time limit and a request size cap, no file
// serving. It runs on its own threads, so a slow or hostile client can only delay other probes
// and scrapes, never a KMS call.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct mg_context;
struct mg_connection;

namespace trousseau::observability {

struct ProbeResult {
  bool ok = false;
  std::string text;  // "ok", or a one-line reason
};

struct HttpHandlers {
  std::function<ProbeResult()> livez;
  std::function<ProbeResult()> readyz;   // also serves /healthz
  std::function<std::string()> metrics;  // Prometheus text format 0.0.4
};

struct HttpOptions {
  std::string listen;              // civetweb form: "127.0.0.1:8787", "[::1]:8787"; port 0: any
  int threads = 2;                 // worker threads (each serves one connection at a time)
  int request_timeout_ms = 2000;   // reading a request and writing the answer
  int max_request_bytes = 4096;    // request line and headers; larger: 413 and close
  int connection_queue = 16;       // accepted connections waiting for a worker
};

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const HttpOptions& options,
                                                           HttpHandlers handlers);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The port actually bound (useful with port 0).
  int port() const { return port_; }
  // Stops accepting, lets the workers finish (bounded by the request timeout), joins them.
  void Stop();

 private:
  explicit HttpServer(HttpHandlers handlers) : handlers_(std::move(handlers)) {}
  static int Handle(::mg_connection* conn, void* self);

  HttpHandlers handlers_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

// Once, while the process is single-threaded (civetweb's global state).
void InitHttpLibrary();

}  // namespace trousseau::observability
