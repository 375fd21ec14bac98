// TlsTestServer: a tiny HTTPS/1.1 server on 127.0.0.1 for CurlTransport tests, one connection at
// a time, one request per connection ("Connection: close"). It records what it was sent and
// answers from a handler. Optionally requires a client certificate signed by a given CA.
//
// Header-only over OpenSSL; link OpenSSL and Threads. Nothing here sleeps: the accept loop polls
// the listening socket and a stop pipe; reads on a connection have a 5 s safety timeout.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace trousseau::fakes {

class TlsTestServer {
 public:
  struct Request {
    std::string method, path, body;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string Header(const std::string& name) const {
      auto it = headers.find(name);
      return it == headers.end() ? "" : it->second;
    }
  };
  struct Response {
    int status = 200;
    std::string body = "{}";
    std::vector<std::pair<std::string, std::string>> headers;
    bool hang = false;  // read the request, then never answer (until the server stops)
  };
  using Handler = std::function<Response(const Request&)>;

  // cert/key: the server identity. client_ca: if non-empty, a client certificate signed by it
  // is required.
  TlsTestServer(const std::string& cert_pem, const std::string& key_pem,
                const std::string& client_ca_pem = "") {
    // A peer that hangs up mid-handshake must not kill the test process: OpenSSL writes
    // alerts with plain write(2) on this side.
    ::signal(SIGPIPE, SIG_IGN);
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (ctx_ == nullptr) throw std::runtime_error("SSL_CTX_new");
    X509* cert = ReadCert(cert_pem);
    EVP_PKEY* key = ReadKey(key_pem);
    if (SSL_CTX_use_certificate(ctx_, cert) != 1 || SSL_CTX_use_PrivateKey(ctx_, key) != 1) {
      throw std::runtime_error("server identity");
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!client_ca_pem.empty()) {
      X509* ca = ReadCert(client_ca_pem);
      X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_), ca);
      X509_free(ca);
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }

    // Record the ALPN protocols each client offers; select none (the server speaks HTTP/1.1).
    SSL_CTX_set_alpn_select_cb(ctx_, &TlsTestServer::AlpnSelect, this);

    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        ::listen(listen_fd_, 16) != 0) {
      throw std::runtime_error("bind/listen");
    }
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    handler_ = [](const Request&) { return Response{}; };
    thread_ = std::thread([this] { Loop(); });
  }

  ~TlsTestServer() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    (void)!::write(stop_pipe_[1], "x", 1);
    thread_.join();
    ::close(listen_fd_);
    ::close(stop_pipe_[0]);
    ::close(stop_pipe_[1]);
    SSL_CTX_free(ctx_);
  }

  TlsTestServer(const TlsTestServer&) = delete;
  TlsTestServer& operator=(const TlsTestServer&) = delete;

  int port() const { return port_; }
  std::string address() const { return "https://127.0.0.1:" + std::to_string(port_); }

  void SetHandler(Handler h) {
    std::lock_guard<std::mutex> g(mu_);
    handler_ = std::move(h);
  }
  void SetResponse(Response r) {
    SetHandler([r](const Request&) { return r; });
  }

  std::vector<Request> requests() const {
    std::lock_guard<std::mutex> g(mu_);
    return requests_;
  }
  // Connections whose TLS handshake failed (e.g. no client certificate).
  int failed_handshakes() const { return failed_handshakes_.load(); }

  // Restricts the server to [min, max] protocol versions (e.g. TLS1_VERSION..TLS1_1_VERSION,
  // which needs security level 0 in OpenSSL 3). Call before the first connection.
  void SetProtocolRange(int min_version, int max_version) {
#if !defined(OPENSSL_IS_BORINGSSL)  // BoringSSL has no security levels; TLS 1.0/1.1 need none
    SSL_CTX_set_security_level(ctx_, 0);
    SSL_CTX_set_cipher_list(ctx_, "DEFAULT:@SECLEVEL=0");
#endif
    SSL_CTX_set_min_proto_version(ctx_, min_version);
    SSL_CTX_set_max_proto_version(ctx_, max_version);
  }

  // The ALPN protocol names each connection's ClientHello offered, in order.
  std::vector<std::vector<std::string>> alpn_offered() const {
    std::lock_guard<std::mutex> g(mu_);
    return alpn_offered_;
  }

 private:
  static int AlpnSelect(SSL* /*ssl*/, const unsigned char** /*out*/, unsigned char* /*outlen*/,
                        const unsigned char* in, unsigned int inlen, void* arg) {
    auto* self = static_cast<TlsTestServer*>(arg);
    std::vector<std::string> names;
    for (unsigned int i = 0; i < inlen;) {
      const unsigned int n = in[i++];
      if (i + n > inlen) break;
      names.emplace_back(reinterpret_cast<const char*>(in + i), n);
      i += n;
    }
    std::lock_guard<std::mutex> g(self->mu_);
    self->alpn_offered_.push_back(std::move(names));
    return SSL_TLSEXT_ERR_NOACK;
  }

  static X509* ReadCert(const std::string& pem) {
    BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    if (x == nullptr) throw std::runtime_error("bad certificate PEM");
    return x;
  }
  static EVP_PKEY* ReadKey(const std::string& pem) {
    BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    EVP_PKEY* k = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    if (k == nullptr) throw std::runtime_error("bad key PEM");
    return k;
  }

  void Loop() {
    for (;;) {
      pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      if ((fds[0].revents & POLLIN) == 0) continue;
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      timeval tv{5, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      Serve(c);
      ::close(c);
      ERR_clear_error();
    }
  }

  void Serve(int fd) {
    SSL* ssl = SSL_new(ctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
      ++failed_handshakes_;
      SSL_free(ssl);
      return;
    }
    Request req;
    if (ReadRequest(ssl, &req)) {
      Handler h;
      {
        std::lock_guard<std::mutex> g(mu_);
        requests_.push_back(req);
        h = handler_;
      }
      Response resp = h(req);
      if (resp.hang) {
        std::unique_lock<std::mutex> g(mu_);
        cv_.wait(g, [this] { return stopping_; });
      } else {
        std::string out = "HTTP/1.1 " + std::to_string(resp.status) + " Status\r\n";
        out += "Content-Type: application/json\r\n";
        out += "Content-Length: " + std::to_string(resp.body.size()) + "\r\n";
        out += "Connection: close\r\n";
        for (const auto& [k, v] : resp.headers) out += k + ": " + v + "\r\n";
        out += "\r\n" + resp.body;
        SSL_write(ssl, out.data(), static_cast<int>(out.size()));
        SSL_shutdown(ssl);
      }
    }
    SSL_free(ssl);
  }

  static bool ReadRequest(SSL* ssl, Request* req) {
    std::string data;
    char buf[4096];
    size_t header_end = std::string::npos;
    while (header_end == std::string::npos) {
      const int n = SSL_read(ssl, buf, sizeof(buf));
      if (n <= 0) return false;
      data.append(buf, static_cast<size_t>(n));
      header_end = data.find("\r\n\r\n");
    }
    const std::string head = data.substr(0, header_end);
    std::string body = data.substr(header_end + 4);
    size_t line_end = head.find("\r\n");
    const std::string request_line = head.substr(0, line_end);
    const size_t sp1 = request_line.find(' ');
    const size_t sp2 = request_line.find(' ', sp1 + 1);
    req->method = request_line.substr(0, sp1);
    req->path = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      const std::string line = head.substr(pos, e - pos);
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        req->headers[name] = value;
      }
      pos = e + 2;
    }
    const std::string cl = req->Header("content-length");
    const size_t want = cl.empty() ? 0 : std::stoul(cl);
    while (body.size() < want) {
      const int n = SSL_read(ssl, buf, sizeof(buf));
      if (n <= 0) return false;
      body.append(buf, static_cast<size_t>(n));
    }
    req->body = body.substr(0, want);
    return true;
  }

  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int port_ = 0;
  int stop_pipe_[2] = {-1, -1};
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  Handler handler_;
  std::vector<Request> requests_;
  std::atomic<int> failed_handshakes_{0};
  std::vector<std::vector<std::string>> alpn_offered_;
};

}  // namespace trousseau::fakes
