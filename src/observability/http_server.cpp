#include "observability/http_server.h"

#include <civetweb.h>

#include <cstring>
#include <string_view>

#include "observability/log.h"

namespace trousseau::observability {
namespace {

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

// One complete answer; the connection closes after it (keep-alive is off).
void Reply(mg_connection* conn, int status, std::string_view content_type, std::string_view body,
           bool allow_header = false) {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\n"
            "Content-Type: %.*s\r\n"
            "Content-Length: %zu\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "%s"
            "Connection: close\r\n\r\n",
            status, Reason(status), static_cast<int>(content_type.size()), content_type.data(),
            body.size(), allow_header ? "Allow: GET, HEAD\r\n" : "");
  const mg_request_info* ri = mg_get_request_info(conn);
  if (ri != nullptr && std::strcmp(ri->request_method, "HEAD") == 0) return;
  mg_write(conn, body.data(), body.size());
}

// civetweb's own error lines go to our structured log (never the request, which a client wrote).
int LogMessage(const mg_connection* /*conn*/, const char* message) {
  log::Warn("http.error", std::string_view(message).substr(0, 200));
  return 1;  // handled: civetweb does not print it
}

constexpr std::string_view kText = "text/plain; charset=utf-8";

}  // namespace

void InitHttpLibrary() { mg_init_library(0); }

int HttpServer::Handle(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  const mg_request_info* ri = mg_get_request_info(conn);
  const std::string_view method = ri->request_method ? ri->request_method : "";
  const std::string_view uri = ri->local_uri ? ri->local_uri : "";
  const bool known = uri == "/livez" || uri == "/readyz" || uri == "/healthz" || uri == "/metrics";
  if (!known) {
    Reply(conn, 404, kText, "not found\n");
    return 404;
  }
  if (method != "GET" && method != "HEAD") {
    Reply(conn, 405, kText, "method not allowed\n", /*allow_header=*/true);
    return 405;
  }
  if (uri == "/metrics") {
    const std::string body = self->handlers_.metrics ? self->handlers_.metrics() : std::string();
    Reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8", body);
    return 200;
  }
  const auto& probe = uri == "/livez" ? self->handlers_.livez : self->handlers_.readyz;
  ProbeResult r = probe ? probe() : ProbeResult{false, "not configured"};
  // A healthy answer may carry a detail after "ok; " (a degraded secondary Vault).
  std::string body = r.ok ? (r.text.rfind("ok; ", 0) == 0 ? r.text : "ok") : r.text;
  // One line, bounded: a reason, never a dump.
  for (char& c : body) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (body.size() > 512) body.resize(512);
  body += '\n';
  const int status = r.ok ? 200 : 503;
  Reply(conn, status, kText, body);
  return status;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const HttpOptions& options,
                                                              HttpHandlers handlers) {
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(handlers)));
  const std::string threads = std::to_string(options.threads);
  const std::string timeout = std::to_string(options.request_timeout_ms);
  const std::string max_request = std::to_string(options.max_request_bytes);
  const std::string queue = std::to_string(options.connection_queue);
  // No document_root: civetweb serves no files. Only the handler below answers.
  const char* mg_options[] = {"listening_ports", options.listen.c_str(),
                              "num_threads", threads.c_str(),
                              "request_timeout_ms", timeout.c_str(),
                              "linger_timeout_ms", "0",
                              "enable_keep_alive", "no",
                              "max_request_size", max_request.c_str(),
                              "connection_queue", queue.c_str(),
                              "listen_backlog", queue.c_str(),
                              "enable_directory_listing", "no",
                              "decode_url", "yes",
                              nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = &LogMessage;
  // mg_start_ex reports why a start failed (a taken port, a bad address) without printing it.
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = nullptr;
  init.configuration_options = mg_options;
  char errtxt[256] = {0};
  unsigned errcode = 0;
  mg_error_data err{};
  err.code = &errcode;
  err.text = errtxt;
  err.text_buffer_size = sizeof(errtxt);
  server->ctx_ = mg_start2(&init, &err);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError("http.listen " + options.listen + ": cannot start the listener: " +
                                  (errtxt[0] ? std::string(errtxt) : std::string("unknown error")));
  }
  mg_set_request_handler(server->ctx_, "/", &HttpServer::Handle, server.get());
  mg_server_port ports[4];
  const int n = mg_get_server_ports(server->ctx_, 4, ports);
  if (n > 0) server->port_ = ports[0].port;
  return server;
}

void HttpServer::Stop() {
  if (ctx_ != nullptr) {
    mg_stop(ctx_);
    ctx_ = nullptr;
  }
}

HttpServer::~HttpServer() { Stop(); }

}  // namespace trousseau::observability
