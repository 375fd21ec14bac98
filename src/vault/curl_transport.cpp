#include "vault/curl_transport.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <system_error>
#include <string_view>
#include <thread>

#include "common/status.h"
#include "observability/log.h"
#include "observability/metrics.h"

namespace trousseau::vault {

struct CurlTransport::Handle {
  CURL* easy = nullptr;
  bool configured = false;  // ConfigureHandle's options were all accepted
  ~Handle() {
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

// One handle borrowed from the pool for one Send(); given back (or destroyed) at scope exit.
class CurlTransport::Lease {
 public:
  Lease(CurlTransport* owner, Handle* h) : owner_(owner), h_(h) {}
  Lease(Lease&& o) noexcept : owner_(o.owner_), h_(o.h_) { o.h_ = nullptr; }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  Lease& operator=(Lease&&) = delete;
  ~Lease() {
    if (h_ != nullptr) owner_->Return(h_);
  }
  Handle* operator->() const { return h_; }
  Handle& operator*() const { return *h_; }

 private:
  CurlTransport* owner_;
  Handle* h_;
};

// Connection cache, DNS cache and TLS sessions shared by all easy handles, with one lock per
// kind of shared data as libcurl requires.
struct CurlTransport::Share {
  CURLSH* sh = nullptr;
  std::mutex locks[CURL_LOCK_DATA_LAST];
  static void Lock(CURL* /*h*/, curl_lock_data data, curl_lock_access /*a*/, void* userp) {
    static_cast<Share*>(userp)->locks[data].lock();
  }
  static void Unlock(CURL* /*h*/, curl_lock_data data, void* userp) {
    static_cast<Share*>(userp)->locks[data].unlock();
  }
  Share() {
    sh = curl_share_init();
    curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, &Share::Lock);
    curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, &Share::Unlock);
    curl_share_setopt(sh, CURLSHOPT_USERDATA, this);
    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }
  ~Share() {
    if (sh != nullptr) curl_share_cleanup(sh);
  }
};

namespace {

// Idle connections the shared cache keeps (libcurl closes the oldest above it). At least
// CurlTransport::kMaxInFlight, so that the connections of a full load are all kept.
constexpr long kMaxIdleConnections = 64;
// CURLOPT_UPLOAD_BUFFERSIZE: libcurl's minimum (CURL_MAX_WRITE_SIZE); see ConfigureHandle.
constexpr long kUploadBufferBytes = 16 * 1024;

struct WriteTarget {
  SecretBuffer* body;
  size_t cap;
  bool overflow = false;
};

// `data` points into the easy handle's receive buffer, which outlives the request now that
// handles are reused: every body byte is wiped there once copied (or refused), so the buffer
// never keeps an answer (a decrypted plaintext, a login's token) after this call.
size_t WriteBody(char* data, size_t size, size_t nmemb, void* userp) {
  auto* t = static_cast<WriteTarget*>(userp);
  const size_t n = size * nmemb;
  if (t->body->size() + n > t->cap) {
    t->overflow = true;
    SecureWipe(data, n);
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  t->body->append(data, n);
  SecureWipe(data, n);
  return n;
}

struct HeaderTarget {
  std::string location;
  std::string date;
};

// The value of `line` if it is the header `name` (lower-case, with the colon), else nullopt.
std::optional<std::string> HeaderValue(std::string_view line, std::string_view name) {
  if (line.size() <= name.size()) return std::nullopt;
  std::string lower(line.substr(0, name.size()));
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower != name) return std::nullopt;
  std::string_view v = line.substr(name.size());
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.remove_suffix(1);
  return std::string(v.substr(0, 2048));
}

// Captures only the Location header (for standby redirects) and the Date header (for the clock
// skew check); other headers are ignored.
size_t ReadHeader(char* data, size_t size, size_t nmemb, void* userp) {
  const size_t n = size * nmemb;
  std::string_view line(data, n);
  auto* t = static_cast<HeaderTarget*>(userp);
  if (auto v = HeaderValue(line, "location:")) t->location = std::move(*v);
  if (auto v = HeaderValue(line, "date:")) t->date = std::move(*v).substr(0, 64);
  return n;
}

CURLcode ApplyTls(CURL* /*curl*/, void* ssl_ctx, void* userp) {
  const auto* tls = static_cast<const TlsMaterial*>(userp);
  return tls->ApplyTo(static_cast<SSL_CTX*>(ssl_ctx)) ? CURLE_OK : CURLE_SSL_CERTPROBLEM;
}

// The options that are the same for every request, set once when a handle is made (a kept
// handle keeps them: no curl_easy_reset and ~25 setopt calls, several of them string copies,
// per request). SendOnce sets the rest and clears its pointers into its own frame afterwards.
bool ConfigureHandle(CURL* c, CURLSH* share, const std::string& pins, size_t max_response_bytes) {
  bool ok = true;
  auto set = [&](CURLcode rc) { ok = ok && rc == CURLE_OK; };
  set(curl_easy_setopt(c, CURLOPT_SHARE, share));
  // The shared connection cache holds at most this many idle connections; libcurl's default
  // (5) closes the rest, so under kube-apiserver's concurrency most calls would pay a fresh
  // mutual-TLS handshake (measured in bench/: ~80% of calls at 16 concurrent clients).
  set(curl_easy_setopt(c, CURLOPT_MAXCONNECTS, kMaxIdleConnections));
  // HTTP/1.1 only: one request per connection at a time, no HTTP/2 library in the data path.
  set(curl_easy_setopt(c, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1)));
  set(curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https"));
  set(curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "https"));
  set(curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L));
  set(curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L));
#ifndef TROUSSEAU_CURL_STATIC
  // Debian's libcurl.so honours proxy environment variables: switch them off. The static build
  // (scripts/build-curl, --disable-proxy) has no proxy code and rejects these options.
  set(curl_easy_setopt(c, CURLOPT_PROXY, ""));
  set(curl_easy_setopt(c, CURLOPT_NOPROXY, "*"));
#endif
  set(curl_easy_setopt(c, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2)));
  set(curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L));
  set(curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L));
  set(curl_easy_setopt(c, CURLOPT_CAINFO, nullptr));
  set(curl_easy_setopt(c, CURLOPT_CAPATH, nullptr));
#if LIBCURL_VERSION_NUM >= 0x075700
  // A kept handle keeps its internal multi handle, which would cache the CA store (24 h by
  // default) across requests and defeat the reloading of a replaced CA file: no CA cache.
  set(curl_easy_setopt(c, CURLOPT_CA_CACHE_TIMEOUT, 0L));
#endif
  set(curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, &ApplyTls));
  if (!pins.empty()) set(curl_easy_setopt(c, CURLOPT_PINNEDPUBLICKEY, pins.c_str()));
  set(curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L));
  set(curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(max_response_bytes)));
  set(curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody));
  set(curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &ReadHeader));
  set(curl_easy_setopt(c, CURLOPT_USERAGENT, "trousseau"));
  // libcurl copies every request it sends over TLS into an upload buffer it allocates per
  // transfer and frees at its end (64 KiB by default): wipe-on-free then zeroes 64 KiB per
  // Vault call, ~82,000 instructions of the ~330,000 the plugin spends per KMS call above a bare
  // client (docs/performance.md, change 17). Its minimum, 16 KiB, is one TLS record's payload:
  // the request still goes out in full-size records, in more SSL_write calls only when larger.
  set(curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, kUploadBufferBytes));
  return ok;
}

// "host:port", "[v6]:port" or "host" -> {host, port}; port defaults to 443.
std::pair<std::string, std::string> SplitHostPort(const std::string& hp) {
  if (!hp.empty() && hp.front() == '[') {
    const size_t close = hp.find(']');
    if (close != std::string::npos && close + 1 < hp.size() && hp[close + 1] == ':') {
      return {hp.substr(0, close + 1), hp.substr(close + 2)};
    }
    return {hp, "443"};
  }
  const size_t colon = hp.rfind(':');
  if (colon == std::string::npos) return {hp, "443"};
  return {hp.substr(0, colon), hp.substr(colon + 1)};
}

// scheme://host[:port] of a URL, or "" if it is not https.
std::string OriginOf(const std::string& url) {
  constexpr std::string_view kHttps = "https://";
  if (url.compare(0, kHttps.size(), kHttps) != 0) return "";
  const size_t end = url.find_first_of("/?#", kHttps.size());
  return url.substr(0, end);
}

absl::Status MapCurlError(CURLcode rc, const std::string& node, const char* errbuf,
                          long timeout_ms, bool overflow, size_t cap, bool* retryable) {
  std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
  const std::string where = "vault " + node + ": ";
  *retryable = true;
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(where + "timed out after " + std::to_string(timeout_ms) +
                                         " ms (" + detail + ")");
    case CURLE_COULDNT_RESOLVE_HOST:
      return absl::UnavailableError(where + "cannot resolve host (" + detail + ")");
    case CURLE_COULDNT_CONNECT:
      return absl::UnavailableError(where + "cannot connect (" + detail + ")");
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return absl::UnavailableError(where +
                                    "server public key does not match any configured SPKI pin "
                                    "(vault.tls.spki_pins)");
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
      return absl::UnavailableError(where + "TLS certificate verification failed against the "
                                    "configured CA (" + detail + ")");
    case CURLE_SSL_CONNECT_ERROR:
      return absl::UnavailableError(where + "TLS handshake failed (" + detail + ")");
    case CURLE_SSL_CERTPROBLEM:
      *retryable = false;
      return absl::FailedPreconditionError(where + "TLS client certificate problem (" + detail + ")");
    case CURLE_UNSUPPORTED_PROTOCOL:
      *retryable = false;
      return absl::FailedPreconditionError(where + "refused: only https is allowed");
    case CURLE_FILESIZE_EXCEEDED:  // a Content-Length over CURLOPT_MAXFILESIZE_LARGE
    case CURLE_WRITE_ERROR:
      if (overflow || rc == CURLE_FILESIZE_EXCEEDED) {
        *retryable = false;
        return absl::InternalError(where + "response larger than vault.max_response_bytes (" +
                                   std::to_string(cap) + ")");
      }
      return absl::InternalError(where + "failed writing response (" + detail + ")");
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
      return absl::UnavailableError(where + "connection failed (" + detail + ")");
    default:
      return absl::UnavailableError(where + "request failed (" + detail + ")");
  }
}

}  // namespace

absl::Status CurlTransport::GlobalInit() {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    return absl::InternalError("libcurl global initialisation failed");
  }
  const curl_version_info_data* v = curl_version_info(CURLVERSION_NOW);
  // The SSL_CTX callback hands libcurl's SSL_CTX to the TLS library we were compiled against:
  // libcurl must use that same one (issue 11: OpenSSL 3, or the static BoringSSL).
#if defined(OPENSSL_IS_BORINGSSL)
  constexpr std::string_view kTls = "BoringSSL";
#else
  constexpr std::string_view kTls = "OpenSSL/";
#endif
  if (v->ssl_version == nullptr || std::string_view(v->ssl_version).substr(0, kTls.size()) != kTls) {
    return absl::FailedPreconditionError(std::string("libcurl must use ") + std::string(kTls) +
                                         "; it uses " + (v->ssl_version ? v->ssl_version : "no TLS"));
  }
  return absl::OkStatus();
}

std::string CurlTransport::LibraryVersion() { return curl_version(); }

std::string CurlTransport::LibraryProtocols() {
  const curl_version_info_data* v = curl_version_info(CURLVERSION_NOW);
  std::string out;
  for (const char* const* p = v->protocols; p != nullptr && *p != nullptr; ++p) {
    if (!out.empty()) out += ' ';
    out += *p;
  }
  return out;
}

std::string CurlTransport::LibraryFeatures() {
  const curl_version_info_data* v = curl_version_info(CURLVERSION_NOW);
  // Names as curl --version prints them, for the bits that say what the build carries.
  static constexpr struct {
    int bit;
    const char* name;
  } kFeatures[] = {
      {CURL_VERSION_ASYNCHDNS, "AsynchDNS"}, {CURL_VERSION_IPV6, "IPv6"},
      {CURL_VERSION_LARGEFILE, "Largefile"}, {CURL_VERSION_SSL, "SSL"},
      {CURL_VERSION_THREADSAFE, "threadsafe"}, {CURL_VERSION_LIBZ, "libz"},
      {CURL_VERSION_BROTLI, "brotli"}, {CURL_VERSION_ZSTD, "zstd"},
      {CURL_VERSION_IDN, "IDN"}, {CURL_VERSION_PSL, "PSL"}, {CURL_VERSION_HTTP2, "HTTP2"},
      {CURL_VERSION_HTTP3, "HTTP3"}, {CURL_VERSION_GSSAPI, "GSS-API"},
      {CURL_VERSION_KERBEROS5, "Kerberos"}, {CURL_VERSION_SPNEGO, "SPNEGO"},
      {CURL_VERSION_NTLM, "NTLM"}, {CURL_VERSION_TLSAUTH_SRP, "TLS-SRP"},
      {CURL_VERSION_UNIX_SOCKETS, "UnixSockets"}, {CURL_VERSION_HTTPS_PROXY, "HTTPS-proxy"},
      {CURL_VERSION_ALTSVC, "alt-svc"}, {CURL_VERSION_HSTS, "HSTS"},
  };
  std::string out;
  for (const auto& f : kFeatures) {
    if ((v->features & f.bit) == 0) continue;
    if (!out.empty()) out += ' ';
    out += f.name;
  }
  return out;
}

const char* CurlTransport::LibraryLinkage() {
#ifdef TROUSSEAU_CURL_STATIC
  return "static";
#else
  return "shared";
#endif
}

namespace {
// Every CurlTransport alive, for TrimAllIdleHandles (a plugin has one or two). Never destroyed,
// so that a transport that outlives static destruction can still take itself off the list.
std::mutex& LiveMu() {
  static auto* mu = new std::mutex;
  return *mu;
}
std::vector<CurlTransport*>& Live() {
  static auto* live = new std::vector<CurlTransport*>;
  return *live;
}
}  // namespace

CurlTransport::CurlTransport(const config::VaultConfig& vault,
                             std::shared_ptr<const TlsMaterial> tls)
    : cfg_(vault), tls_(std::move(tls)), share_(std::make_unique<Share>()) {
  for (const auto& pin : cfg_.tls.spki_pins) {
    if (!pins_.empty()) pins_ += ';';
    pins_ += pin;
  }
  std::lock_guard<std::mutex> lock(LiveMu());
  Live().push_back(this);
}

size_t CurlTransport::TrimIdleHandles(SteadyTime now) {
  std::vector<Handle*> drop;
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (now - last_acquire_ < kQuietBeforeTrim) return 0;
    while (pool_.size() > kKeepIdleHandles) {
      drop.push_back(pool_.front());  // the least recently used (Acquire takes from the back)
      pool_.erase(pool_.begin());
    }
  }
  for (Handle* h : drop) delete h;  // curl_easy_cleanup outside the lock; its frees are wiped
  return drop.size();
}

size_t CurlTransport::TrimAllIdleHandles() {
  const SteadyTime now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(LiveMu());
  size_t n = 0;
  for (CurlTransport* t : Live()) n += t->TrimIdleHandles(now);
  return n;
}

size_t CurlTransport::PooledHandles() {
  std::lock_guard<std::mutex> lock(pool_mu_);
  return pool_.size();
}

CurlTransport::~CurlTransport() {
  {
    std::lock_guard<std::mutex> live_lock(LiveMu());
    Live().erase(std::find(Live().begin(), Live().end(), this));
  }
  // Pooled handles first: they refer to the share handle, destroyed after this body.
  std::lock_guard<std::mutex> lock(pool_mu_);
  for (Handle* h : pool_) delete h;
  pool_.clear();
}

absl::StatusOr<std::unique_ptr<CurlTransport>> CurlTransport::Create(
    const config::VaultConfig& vault, std::shared_ptr<const TlsMaterial> tls) {
  if (vault.addresses.empty()) return absl::InvalidArgumentError("vault.addresses is empty");
  if (!tls) return absl::InvalidArgumentError("TLS material is required");
  for (const auto& a : vault.addresses) {
    if (a.rfind("https://", 0) != 0) {
      return absl::InvalidArgumentError("vault.addresses: only https:// is allowed: " + a);
    }
  }
  return std::unique_ptr<CurlTransport>(new CurlTransport(vault, std::move(tls)));
}

std::string CurlTransport::CurrentNode() const {
  return cfg_.addresses[preferred_.load() % cfg_.addresses.size()];
}

struct CurlTransport::Waiter {
  std::condition_variable cv;
  bool granted = false;  // a finishing request handed its slot to this one
};

CurlTransport::Handle* CurlTransport::Acquire(SteadyTime until, absl::Status* why) {
  {
    std::unique_lock<std::mutex> lock(pool_mu_);
    last_acquire_ = std::chrono::steady_clock::now();
    if (in_flight_ < kMaxInFlight && waiters_.empty()) {
      ++in_flight_;
    } else {
      Waiter w;
      metrics::VaultRequestWaiting waiting;  // trousseau_vault_requests_waiting, until it leaves
      waiters_.push_back(&w);
      while (!w.granted) {
        if (w.cv.wait_until(lock, until) == std::cv_status::timeout && !w.granted) {
          waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &w));
          *why = absl::DeadlineExceededError(
              "vault: the deadline passed while this request waited for one of the " +
              std::to_string(kMaxInFlight) + " slots for concurrent Vault requests");
          return nullptr;
        }
      }
      // The slot came with the grant: in_flight_ already counts it.
    }
    if (!pool_.empty()) {
      Handle* h = pool_.back();
      pool_.pop_back();
      return h;
    }
  }
  auto* h = new Handle();
  h->easy = curl_easy_init();
  h->configured = h->easy != nullptr &&
                  ConfigureHandle(h->easy, share_->sh, pins_, cfg_.max_response_bytes);
  return h;
}

size_t CurlTransport::RequestsInFlight() {
  std::lock_guard<std::mutex> lock(pool_mu_);
  return in_flight_;
}

void CurlTransport::Return(Handle* h) {
  {
    std::lock_guard<std::mutex> lock(pool_mu_);
    if (h->easy != nullptr && pool_.size() < kMaxInFlight) {
      pool_.push_back(h);
      h = nullptr;
    }
    if (!waiters_.empty()) {
      Waiter* w = waiters_.front();
      waiters_.pop_front();
      w->granted = true;  // the slot passes to the oldest waiter
      w->cv.notify_one();
    } else {
      --in_flight_;
    }
  }
  delete h;  // a handle that could not be created (never more than kMaxInFlight otherwise)
}

bool CurlTransport::IsConfiguredNode(const std::string& origin) const {
  return std::find(cfg_.addresses.begin(), cfg_.addresses.end(), origin) != cfg_.addresses.end();
}

namespace {
std::vector<std::string> TlsFiles(const config::TlsConfig& t) {
  std::vector<std::string> files = {t.ca_file};
  if (!t.client_cert_file.empty()) {
    files.push_back(t.client_cert_file);
    files.push_back(t.client_key_file);
  }
  return files;
}

std::vector<FileIdentity> Identities(const std::vector<std::string>& files) {
  std::vector<FileIdentity> out;
  for (const auto& f : files) {
    auto id = StatFile(f);
    out.push_back(id.ok() ? *id : FileIdentity{});
  }
  return out;
}
}  // namespace

std::shared_ptr<const TlsMaterial> CurlTransport::CurrentTls() {
  std::lock_guard<std::mutex> lock(tls_mu_);
  return tls_;
}

void CurlTransport::MaybeReloadTls() {
  const auto now = SystemClock().Now();
  {
    std::lock_guard<std::mutex> lock(tls_mu_);
    if (tls_files_.empty()) {  // first call: remember what was loaded at start
      tls_files_ = Identities(TlsFiles(cfg_.tls));
      tls_checked_ = now;
      return;
    }
    if (now - tls_checked_ < kTlsCheckPeriod) return;
    tls_checked_ = now;
  }
  auto ids = Identities(TlsFiles(cfg_.tls));
  {
    std::lock_guard<std::mutex> lock(tls_mu_);
    if (ids == tls_files_) return;
  }
  // A file was replaced (or is mid-replacement): load all of it; keep the old material on error.
  auto fresh = TlsMaterial::Load(cfg_.tls);
  std::lock_guard<std::mutex> lock(tls_mu_);
  if (!fresh.ok()) {
    log::Warn("tls.reload", "TLS files changed but cannot be loaded; keeping the current ones",
              {{"error", std::string(fresh.status().message())}});
    return;  // tls_files_ unchanged: retried at the next check
  }
  tls_ = *fresh;
  tls_files_ = std::move(ids);
  log::Info("tls.reload", "TLS files changed; new connections use the reloaded CA and identity",
            {{"ca_certificates", static_cast<int64_t>(tls_->ca_count())},
             {"client_identity", tls_->has_client_identity()}});
}

absl::StatusOr<HttpResponse> CurlTransport::Send(const HttpRequest& request) {
  MaybeReloadTls();
  absl::Status last = absl::UnavailableError("vault: no address configured");
  std::optional<HttpResponse> unhealthy;  // the last 429/502/503 answer, if any
  absl::Status cause;  // the last error of a pass that did not end in the deadline
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    if (pass > 0) {
      // Every node failed: back off (bounded, jittered) and go round again while the deadline
      // leaves room, so that a failover shorter than the deadline costs no request. The margin
      // lets the caller get our error rather than its own deadline.
      const auto pause = Backoff(pass);
      if (SystemClock().Now() + pause + 2 * kDeadlineMargin >= request.deadline) break;
      log::Warn("vault.retry", "every vault address failed; retrying after a pause",
                {{"pause_ms", static_cast<int64_t>(pause.count())},
                 {"error", std::string(last.message())}});
      std::this_thread::sleep_for(pause);
    }
    bool give_up = false;
    auto resp = TryEachNode(request, &last, &unhealthy, &give_up);
    if (resp.has_value()) return std::move(*resp);
    if (last.code() != absl::StatusCode::kDeadlineExceeded) cause = last;
    if (give_up) break;
  }
  // An HTTP answer (sealed, rate limited) says more than a transport error: let the caller map it.
  if (unhealthy.has_value() && last.code() != absl::StatusCode::kDeadlineExceeded) {
    return std::move(*unhealthy);
  }
  // The last attempt ran into the caller's deadline after earlier attempts failed otherwise:
  // "timed out after 52 ms" alone would hide why (a broken proxy, a bad certificate...).
  if (last.code() == absl::StatusCode::kDeadlineExceeded && !cause.ok() &&
      last.message().find(cause.message()) == std::string_view::npos) {
    return absl::DeadlineExceededError(std::string(last.message()) +
                                       "; the attempts before it failed with: " +
                                       std::string(cause.message()));
  }
  return last;
}

std::chrono::milliseconds CurlTransport::Backoff(int pass) {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const int shift = std::min(pass - 1, 10);  // 100 ms << 10 is far past the cap already
  const int64_t base = std::min<int64_t>(kBackoffBase.count() << shift, kBackoffCap.count());
  std::uniform_int_distribution<int64_t> jitter(base / 2, base + base / 2);
  return std::chrono::milliseconds(jitter(rng));
}

std::optional<HttpResponse> CurlTransport::TryEachNode(const HttpRequest& request,
                                                       absl::Status* last,
                                                       std::optional<HttpResponse>* unhealthy,
                                                       bool* give_up) {
  absl::Status queued;
  Handle* slot = Acquire(request.deadline - kDeadlineMargin, &queued);
  if (slot == nullptr) {
    *last = queued;
    *give_up = true;
    return std::nullopt;
  }
  Lease handle(this, slot);
  if (handle->easy == nullptr) {
    *last = absl::ResourceExhaustedError("libcurl: cannot create a handle");
    *give_up = true;
    return std::nullopt;
  }
  const size_t n = cfg_.addresses.size();
  const size_t start = preferred_.load() % n;
  for (size_t i = 0; i < n; ++i) {
    if (SystemClock().Now() >= request.deadline) {
      *last = absl::DeadlineExceededError("vault: the deadline passed before the request was "
                                          "sent (last error: " + std::string(last->message()) + ")");
      *give_up = true;
      return std::nullopt;
    }
    std::string node = cfg_.addresses[(start + i) % n];
    bool retryable = false;
    auto resp = SendOnce(*handle, node, request, &retryable);
    // A standby may answer 307 to the active node: follow once, only to a configured address.
    if (resp.ok() && resp->status == 307) {
      const std::string origin = OriginOf(resp->redirect_location);
      if (origin.empty() || !IsConfiguredNode(origin)) {
        *last = absl::UnavailableError("vault " + node +
                                       ": redirected to an address not in vault.addresses (" +
                                       (origin.empty() ? "not https" : origin) + "); not followed");
        log::Warn("vault.redirect.refused", "standby redirect not followed",
                  {{"from", node}, {"error", std::string(last->message())}});
        metrics::VaultRedirectRefused();
        continue;
      }
      log::Info("vault.redirect", "following standby redirect to the active node",
                {{"from", node}, {"to", origin}});
      metrics::VaultRedirectFollowed();
      node = origin;
      resp = SendOnce(*handle, node, request, &retryable);
    }
    if (!resp.ok()) {
      *last = resp.status();
      if (!retryable) {
        *give_up = true;
        return std::nullopt;
      }
      if (n > 1) {
        log::Warn("vault.failover", "vault node failed, trying the next address",
                  {{"node", node}, {"error", std::string(last->message())}});
        metrics::VaultFailover();
      }
      continue;
    }
    const long s = resp->status;
    if (s == 429 || s == 500 || s == 502 || s == 503 || s == 504) {
      // Sealed, rate limited, a broken or timed-out proxy, or a standby mid-election (500
      // "active cluster node not found"): another node, or this one a moment later, may serve. If none does,
      // the caller gets this answer's mapped error after the last pass. (501, not initialised,
      // is final.)
      *last = absl::UnavailableError("vault " + node + ": answered HTTP " + std::to_string(s));
      log::Warn("vault.failover", "vault node unavailable, trying the next address",
                {{"node", node}, {"http_status", s}});
      if (n > 1) metrics::VaultFailover();
      *unhealthy = std::move(*resp);
      continue;
    }
    auto it = std::find(cfg_.addresses.begin(), cfg_.addresses.end(), node);
    if (it != cfg_.addresses.end()) {
      const size_t good = static_cast<size_t>(it - cfg_.addresses.begin());
      if (good != preferred_.load()) {
        log::Info("vault.node", "using vault node", {{"node", node}});
        preferred_ = good;
      }
    }
    return std::move(*resp);
  }
  return std::nullopt;
}

absl::StatusOr<HttpResponse> CurlTransport::SendOnce(Handle& h, const std::string& node,
                                                     const HttpRequest& request, bool* retryable) {
  *retryable = true;
  CURL* c = h.easy;

  // Leave the caller kDeadlineMargin to send our answer: an attempt that ran to the caller's
  // own deadline ends as its bare "Deadline Exceeded", and the cause we know is lost.
  const auto now = SystemClock().Now();
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
      request.deadline - kDeadlineMargin - now);
  long timeout_ms = static_cast<long>(std::min(remaining, cfg_.request_timeout).count());
  if (timeout_ms <= 0) {
    return absl::DeadlineExceededError("vault " + node + ": no time left before the deadline");
  }
  const long connect_ms = std::min<long>(timeout_ms, static_cast<long>(cfg_.connect_timeout.count()));

  std::string url = node + request.path;
  std::string connect_to;
  if (!cfg_.tls.server_name.empty()) {
    // Connect to the configured address, but verify the certificate for server_name.
    const auto [host, port] = SplitHostPort(node.substr(8));
    url = "https://" + cfg_.tls.server_name + ":" + port + request.path;
    connect_to = cfg_.tls.server_name + ":" + port + ":" + host + ":" + port;
  }

  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';
  HttpResponse out;
  out.node = node;
  WriteTarget target{&out.body, cfg_.max_response_bytes};
  HeaderTarget headers_in;

  struct curl_slist* headers = nullptr;
  struct curl_slist* connect_list = nullptr;
  SecretBuffer token_header;
  headers = curl_slist_append(headers, "X-Vault-Request: true");
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  if (!cfg_.namespace_.empty()) {
    headers = curl_slist_append(headers, ("X-Vault-Namespace: " + cfg_.namespace_).c_str());
  }
  if (request.token) {
    static constexpr std::string_view kTokenHeader = "X-Vault-Token: ";
    token_header.reserve(kTokenHeader.size() + request.token->size() + 1);
    token_header.append(kTokenHeader);
    token_header.append(request.token->view());
    token_header.append("\0", 1);
    headers = curl_slist_append(headers, token_header.chars());
  }
  if (!connect_to.empty()) connect_list = curl_slist_append(connect_list, connect_to.c_str());

  bool setup_ok = h.configured;
  auto set = [&](CURLcode rc) { setup_ok = setup_ok && rc == CURLE_OK; };
  // Only what changes per request is set here; the rest was set once (ConfigureHandle).
  set(curl_easy_setopt(c, CURLOPT_URL, url.c_str()));
  const std::shared_ptr<const TlsMaterial> tls = CurrentTls();  // alive for this request
  set(curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, const_cast<TlsMaterial*>(tls.get())));
  set(curl_easy_setopt(c, CURLOPT_CONNECT_TO, connect_list));  // nullptr: none
  set(curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms));
  set(curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms));
  set(curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf));
  set(curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers));
  set(curl_easy_setopt(c, CURLOPT_WRITEDATA, &target));
  set(curl_easy_setopt(c, CURLOPT_HEADERDATA, &headers_in));
  if (request.method == HttpRequest::Method::kPost) {
    const char* data = request.body ? request.body->chars() : "";
    const long len = request.body ? static_cast<long>(request.body->size()) : 0L;
    set(curl_easy_setopt(c, CURLOPT_POST, 1L));
    set(curl_easy_setopt(c, CURLOPT_POSTFIELDS, data));
    set(curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, len));
  } else {
    set(curl_easy_setopt(c, CURLOPT_HTTPGET, 1L));
  }

  absl::StatusOr<HttpResponse> result;
  if (!setup_ok) {
    *retryable = false;
    result = absl::InternalError("libcurl rejected an option (libcurl too old?)");
  } else {
    const auto started = std::chrono::steady_clock::now();
    CURLcode rc = curl_easy_perform(c);
    long answered = 0;  // 0: no HTTP answer
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &answered);
    metrics::ObserveVault(request.path, node, answered,
                          std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
                              .count());
    if (rc != CURLE_OK) {
      // libcurl's text for a failed socket() or connect() omits errno ("Couldn't connect to
      // server"): name it, so that "Too many open files" is not hidden.
      std::string detail = errbuf;
      long os_errno = 0;
      if (curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno != 0) {
        const std::string why = std::error_code(static_cast<int>(os_errno),
                                                std::generic_category()).message();
        if (detail.find(why) == std::string::npos) {
          detail = (detail.empty() ? curl_easy_strerror(rc) : detail) + "; " + why;
        }
      } else if (rc == CURLE_COULDNT_CONNECT) {
        // A failed socket() leaves no errno in libcurl: check whether we can open one at all
        // (out of descriptors: RLIMIT_NOFILE or the system's table).
        const int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
          ::close(probe);
        } else if (errno == EMFILE || errno == ENFILE) {
          detail += "; cannot open a socket: " +
                    std::error_code(errno, std::generic_category()).message() +
                    (errno == EMFILE ? " (RLIMIT_NOFILE)" : "");
        }
      }
      result = MapCurlError(rc, node, detail.c_str(), timeout_ms, target.overflow,
                            cfg_.max_response_bytes, retryable);
    } else {
      long status = 0;
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
      out.status = status;
      if (status == 307) out.redirect_location = headers_in.location;
      out.date = headers_in.date;
      result = std::move(out);
    }
  }
  // Forget the header list (it held the token) before freeing it, and every pointer into this
  // frame: the handle is kept.
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
  curl_easy_setopt(c, CURLOPT_CONNECT_TO, nullptr);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, nullptr);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, nullptr);
  curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, nullptr);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, nullptr);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
  for (curl_slist* p = headers; p != nullptr; p = p->next) SecureWipe(p->data, std::strlen(p->data));
  curl_slist_free_all(headers);
  curl_slist_free_all(connect_list);
  return result;
}

}  // namespace trousseau::vault
