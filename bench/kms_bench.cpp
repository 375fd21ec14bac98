// trousseau-bench: latency and throughput of Encrypt/Decrypt through the plugin (KMS v2 gRPC on
// its Unix socket) and, as the baseline, straight to Vault/OpenBao Transit over the same mutual
// TLS (same CA, same client certificate, one kept-alive connection per thread).
//
//   trousseau-bench plugin --socket PATH --n N --concurrency C --op encrypt|decrypt|status
//                   [--json]
//   trousseau-bench vault --addr https://127.0.0.1:PORT --ca F --cert F --key F --token-file F
//                   [--mount transit] --key-name kubernetes --n N --concurrency C
//                   --op encrypt|decrypt [--json]
//   [--latencies-out FILE]  also write every measured call's latency (ns, sorted, one a line)
//   --op roundtrip            Encrypt a 32-byte seed, then Decrypt what came back: one timed call
//                             (both modes); the checks of both halves are done.
//   --op status --pace-us U --n BIG   a paced Status prober: one call every U µs until --n calls
//                             or SIGINT/SIGTERM, then the numbers of the calls made so far.
//   trousseau-bench plugin --socket PATH --op burst-prepare --seeds S --burst-file F
//                             Encrypts S distinct 32-byte seeds (untimed, --concurrency threads)
//                             and writes what Decrypt needs (one JSON line per seed) to F.
//   trousseau-bench plugin --socket PATH --op burst --burst-file F --dups D --concurrency C
//                             Decrypts every seed of F D times (seed 0 D times, seed 1 D times,
//                             ...: duplicates are in flight together, as when kube-apiserver
//                             restarts and reads every object), C threads pulling from one queue;
//                             every plaintext is checked.
//
// Each of C threads warms up (--warmup calls, default 20: connection set up, TLS handshake done),
// then all start together and time every call with steady_clock. One line per run: mode, op, n,
// concurrency, p50/p90/p99 in microseconds, throughput per second. Both modes send the same
// 32-byte plaintext. `--op status` (plugin only) times the v2 Status call, which never reaches
// Vault: the floor of the gRPC hop. A benchmark measures: nothing here judges the numbers. A failed call is
// counted, the first error is printed, and the exit code is 1 (a run with errors is no baseline).
#include <curl/curl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <latch>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/base64.h"
#include "kms_v2.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

// The same 32 bytes (the size of a KMS v2 DEK seed) in both modes.
constexpr std::string_view kPlaintext = "trousseau-bench-32-byte-dek-seed";
static_assert(kPlaintext.size() == 32);
constexpr auto kCallTimeout = std::chrono::seconds(10);

// Set by SIGINT/SIGTERM: workers stop after their current call and the run reports what it did.
std::atomic<bool> g_stop{false};
extern "C" void OnStop(int) { g_stop.store(true); }

// The 32-byte plaintext of burst seed i: distinct for every i, derivable from i alone.
std::string SeedPlaintext(long i) {
  std::string digits = std::to_string(i % 10000000000L);
  return "trousseau-bench-burst-" + std::string(10 - digits.size(), '0') + digits;  // 22 + 10
}

const char* const kUsage =
    "usage:\n"
    "  trousseau-bench plugin --socket PATH --n N --concurrency C\n"
    "                  --op encrypt|decrypt|roundtrip|status|burst-prepare|burst\n"
    "                  [--pace-us U] [--seeds S] [--dups D] [--burst-file F]\n"
    "                  [--warmup W] [--json] [--latencies-out FILE]\n"
    "  trousseau-bench vault --addr https://HOST:PORT --ca FILE --cert FILE --key FILE\n"
    "                  --token-file FILE [--mount transit] --key-name NAME --n N\n"
    "                  --concurrency C --op encrypt|decrypt|roundtrip [--warmup W] [--json]\n"
    "                  [--latencies-out FILE]\n"
    "\n"
    "  --n            measured calls in total, spread over the threads (default 1000)\n"
    "  --concurrency  threads, each with its own blocking call in flight (default 1)\n"
    "  --warmup       untimed calls per thread before the clock starts (default 20)\n"
    "  --pace-us      sleep this long after every call (a paced prober; default 0)\n"
    "  --seeds        burst-prepare: distinct seeds to encrypt (default 1000)\n"
    "  --dups         burst: decrypts of every seed (default 10)\n"
    "  --burst-file   burst-prepare writes it, burst reads it\n"
    "  --json         one JSON object per run instead of the text line\n"
    "  --latencies-out  also write each measured call's latency in ns to FILE, sorted, one a\n"
    "                 line (so that runs can be merged into exact percentiles)\n";

struct Options {
  std::string mode;
  std::string op = "encrypt";
  long n = 1000;
  long concurrency = 1;
  long warmup = 20;
  bool json = false;
  std::string latencies_out;
  long pace_us = 0;
  long seeds = 1000;
  long dups = 10;
  std::string burst_file;
  // plugin
  std::string socket;
  // vault
  std::string addr, ca, cert, key, token_file, mount = "transit", key_name;
};

[[noreturn]] void Usage(const std::string& why) {
  std::cerr << "trousseau-bench: " << why << "\n\n" << kUsage;
  std::exit(2);
}

long ParsePositive(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || end == nullptr || *end != '\0' || x <= 0) {
    Usage(flag + " needs a positive integer, got \"" + v + "\"");
  }
  return x;
}

Options ParseArgs(int argc, char** argv) {
  if (argc < 2) Usage("missing mode");
  Options o;
  o.mode = argv[1];
  if (o.mode == "-h" || o.mode == "--help") {
    std::cout << kUsage;
    std::exit(0);
  }
  if (o.mode != "plugin" && o.mode != "vault") Usage("unknown mode \"" + o.mode + "\"");
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    bool inline_value = false;
    if (const size_t eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      inline_value = true;
    }
    if (flag == "--json") {
      o.json = true;
      continue;
    }
    if (!inline_value) {
      if (i + 1 >= argc) Usage(flag + " needs a value");
      value = argv[++i];
    }
    if (flag == "--op") o.op = value;
    else if (flag == "--n") o.n = ParsePositive(flag, value);
    else if (flag == "--concurrency" || flag == "-c") o.concurrency = ParsePositive(flag, value);
    else if (flag == "--warmup") o.warmup = ParsePositive(flag, value);
    else if (flag == "--socket") o.socket = value;
    else if (flag == "--addr") o.addr = value;
    else if (flag == "--ca") o.ca = value;
    else if (flag == "--cert") o.cert = value;
    else if (flag == "--key") o.key = value;
    else if (flag == "--token-file") o.token_file = value;
    else if (flag == "--mount") o.mount = value;
    else if (flag == "--key-name") o.key_name = value;
    else if (flag == "--latencies-out") o.latencies_out = value;
    else if (flag == "--pace-us") o.pace_us = ParsePositive(flag, value);
    else if (flag == "--seeds") o.seeds = ParsePositive(flag, value);
    else if (flag == "--dups") o.dups = ParsePositive(flag, value);
    else if (flag == "--burst-file") o.burst_file = value;
    else Usage("unknown flag " + flag);
  }
  if (o.op != "encrypt" && o.op != "decrypt" && o.op != "roundtrip" && o.op != "status" &&
      o.op != "burst-prepare" && o.op != "burst") {
    Usage("--op must be encrypt, decrypt, roundtrip, status, burst-prepare or burst");
  }
  if ((o.op == "status" || o.op == "burst-prepare" || o.op == "burst") && o.mode != "plugin") {
    Usage("--op " + o.op + " is for plugin mode only");
  }
  if ((o.op == "burst-prepare" || o.op == "burst") && o.burst_file.empty()) {
    Usage("--op " + o.op + " needs --burst-file");
  }
  if (o.op == "burst-prepare" || o.op == "burst") o.n = std::max(o.n, o.concurrency);
  if (o.concurrency > 1024) Usage("--concurrency is at most 1024");
  if (o.n < o.concurrency) Usage("--n must be at least --concurrency");
  if (o.mode == "plugin" && o.socket.empty()) Usage("plugin mode needs --socket");
  if (o.mode == "vault") {
    if (o.addr.rfind("https://", 0) != 0) Usage("vault mode needs --addr https://...");
    if (o.ca.empty() || o.cert.empty() || o.key.empty()) {
      Usage("vault mode needs --ca, --cert and --key (mutual TLS)");
    }
    if (o.token_file.empty()) Usage("vault mode needs --token-file");
    if (o.key_name.empty()) Usage("vault mode needs --key-name");
  }
  return o;
}

// ---------------------------------------------------------------- one worker's client
// A Client is used by one thread only. Call() does one operation and returns "" on success or
// the reason it failed; the caller times it.
class Client {
 public:
  virtual ~Client() = default;
  virtual std::string Call() = 0;
  // Connection facts worth printing (e.g. the HTTP version libcurl negotiated).
  virtual std::string Transport() const { return ""; }
  // New connections opened so far (-1: not known, e.g. gRPC manages its own).
  virtual long Connects() const { return -1; }
};

// ---- plugin: KMS v2 over the Unix socket; all threads share one channel, as kube-apiserver does.
struct PluginShared {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v2::KeyManagementService::Stub> stub;
  // for decrypt: what one Encrypt returned
  v2::DecryptRequest decrypt_request;
};

void SetDeadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
}

std::string GrpcError(const char* what, const grpc::Status& st) {
  return std::string(what) + ": gRPC code " + std::to_string(static_cast<int>(st.error_code())) +
         ": " + st.error_message();
}

class PluginClient final : public Client {
 public:
  PluginClient(const PluginShared& shared, std::string_view op)
      : s_(shared), decrypt_(op == "decrypt"), status_(op == "status"),
        roundtrip_(op == "roundtrip") {
    enc_.set_plaintext(std::string(kPlaintext));
    enc_.set_uid("trousseau-bench");
  }
  std::string Call() override {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    if (status_) {
      v2::StatusResponse resp;
      const grpc::Status st = s_.stub->Status(&ctx, v2::StatusRequest(), &resp);
      if (!st.ok()) return GrpcError("Status", st);
      if (resp.version() != "v2") return "Status answered version \"" + resp.version() + "\"";
      return "";
    }
    if (decrypt_) {
      v2::DecryptResponse resp;
      const grpc::Status st = s_.stub->Decrypt(&ctx, s_.decrypt_request, &resp);
      if (!st.ok()) return GrpcError("Decrypt", st);
      if (resp.plaintext() != kPlaintext) return "Decrypt returned a different plaintext";
      return "";
    }
    v2::EncryptResponse resp;
    const grpc::Status st = s_.stub->Encrypt(&ctx, enc_, &resp);
    if (!st.ok()) return GrpcError("Encrypt", st);
    if (resp.ciphertext().empty() || resp.key_id().empty()) {
      return "Encrypt returned an empty ciphertext or key_id";
    }
    if (!roundtrip_) return "";
    // Round trip: decrypt what just came back (the caller times both halves as one call).
    v2::DecryptRequest dreq;
    dreq.set_ciphertext(resp.ciphertext());
    dreq.set_key_id(resp.key_id());
    dreq.set_uid("trousseau-bench");
    for (const auto& [k, v] : resp.annotations()) (*dreq.mutable_annotations())[k] = v;
    grpc::ClientContext dctx;
    SetDeadline(dctx);
    v2::DecryptResponse dresp;
    const grpc::Status dst = s_.stub->Decrypt(&dctx, dreq, &dresp);
    if (!dst.ok()) return GrpcError("Decrypt", dst);
    if (dresp.plaintext() != kPlaintext) return "Decrypt returned a different plaintext";
    return "";
  }

 private:
  const PluginShared& s_;
  const bool decrypt_;
  const bool status_;
  const bool roundtrip_;
  v2::EncryptRequest enc_;
};

std::string SetupPlugin(const Options& o, PluginShared& shared) {
  shared.channel = grpc::CreateChannel("unix:" + o.socket, grpc::InsecureChannelCredentials());
  if (!shared.channel->WaitForConnected(std::chrono::system_clock::now() +
                                        std::chrono::seconds(5))) {
    return "cannot connect to unix:" + o.socket + " within 5 s";
  }
  shared.stub = v2::KeyManagementService::NewStub(shared.channel);
  if (o.op == "decrypt") {
    v2::EncryptRequest req;
    req.set_plaintext(std::string(kPlaintext));
    req.set_uid("trousseau-bench-setup");
    v2::EncryptResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    const grpc::Status st = shared.stub->Encrypt(&ctx, req, &resp);
    if (!st.ok()) return GrpcError("setup Encrypt", st);
    shared.decrypt_request.set_ciphertext(resp.ciphertext());
    shared.decrypt_request.set_key_id(resp.key_id());
    shared.decrypt_request.set_uid("trousseau-bench");
    for (const auto& [k, v] : resp.annotations()) {
      (*shared.decrypt_request.mutable_annotations())[k] = v;
    }
  }
  return "";
}

// ---- vault: libcurl straight to Transit; one easy handle (one kept-alive connection) per thread.
struct VaultShared {
  std::string encrypt_url, decrypt_url;
  std::string token_header;
  std::string encrypt_body, decrypt_body;
};

size_t AppendBody(char* data, size_t size, size_t nmemb, void* userp) {
  static_cast<std::string*>(userp)->append(data, size * nmemb);
  return size * nmemb;
}

class VaultClient final : public Client {
 public:
  VaultClient(const Options& o, const VaultShared& s, bool decrypt, bool roundtrip = false)
      : s_(s), decrypt_(decrypt), roundtrip_(roundtrip) {
    easy_ = curl_easy_init();
    headers_ = curl_slist_append(headers_, "X-Vault-Request: true");
    headers_ = curl_slist_append(headers_, "Content-Type: application/json");
    headers_ = curl_slist_append(headers_, "Expect:");
    headers_ = curl_slist_append(headers_, s.token_header.c_str());
    const std::string& body = decrypt ? s.decrypt_body : s.encrypt_body;
    bool ok = easy_ != nullptr && headers_ != nullptr;
    auto set = [&](CURLcode rc) {
      if (ok && rc != CURLE_OK) setup_error_ = curl_easy_strerror(rc);
      ok = ok && rc == CURLE_OK;
    };
    if (ok) {
      set(curl_easy_setopt(easy_, CURLOPT_URL, (decrypt ? s.decrypt_url : s.encrypt_url).c_str()));
      set(curl_easy_setopt(easy_, CURLOPT_PROTOCOLS_STR, "https"));
      set(curl_easy_setopt(easy_, CURLOPT_NOSIGNAL, 1L));
#ifndef TROUSSEAU_CURL_STATIC  // the static libcurl has no proxy code and rejects the option
      set(curl_easy_setopt(easy_, CURLOPT_PROXY, ""));
#endif
      set(curl_easy_setopt(easy_, CURLOPT_SSLVERSION, static_cast<long>(CURL_SSLVERSION_TLSv1_2)));
      set(curl_easy_setopt(easy_, CURLOPT_SSL_VERIFYPEER, 1L));
      set(curl_easy_setopt(easy_, CURLOPT_SSL_VERIFYHOST, 2L));
      set(curl_easy_setopt(easy_, CURLOPT_CAINFO, o.ca.c_str()));
      set(curl_easy_setopt(easy_, CURLOPT_CAPATH, nullptr));
      set(curl_easy_setopt(easy_, CURLOPT_SSLCERT, o.cert.c_str()));
      set(curl_easy_setopt(easy_, CURLOPT_SSLKEY, o.key.c_str()));
      set(curl_easy_setopt(easy_, CURLOPT_TCP_KEEPALIVE, 1L));
      // Generous: at c=256 on a loaded 2-core machine the handshakes (warm-up, untimed) queue.
      set(curl_easy_setopt(easy_, CURLOPT_CONNECTTIMEOUT_MS, 10000L));
      set(curl_easy_setopt(easy_, CURLOPT_TIMEOUT_MS,
                           static_cast<long>(std::chrono::milliseconds(kCallTimeout).count())));
      set(curl_easy_setopt(easy_, CURLOPT_HTTPHEADER, headers_));
      set(curl_easy_setopt(easy_, CURLOPT_POST, 1L));
      set(curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, body.c_str()));
      set(curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size())));
      set(curl_easy_setopt(easy_, CURLOPT_WRITEFUNCTION, &AppendBody));
      set(curl_easy_setopt(easy_, CURLOPT_WRITEDATA, &resp_));
      set(curl_easy_setopt(easy_, CURLOPT_ERRORBUFFER, errbuf_));
      set(curl_easy_setopt(easy_, CURLOPT_USERAGENT, "trousseau-bench"));
    }
    setup_ok_ = ok;
  }
  ~VaultClient() override {
    if (easy_ != nullptr) curl_easy_cleanup(easy_);
    curl_slist_free_all(headers_);
  }
  VaultClient(const VaultClient&) = delete;
  VaultClient& operator=(const VaultClient&) = delete;

  std::string Call() override {
    if (!roundtrip_) return Perform(decrypt_);
    // Round trip on the same kept-alive connection: encrypt, then decrypt what came back.
    if (std::string e = Perform(false); !e.empty()) return e;
    const json j = json::parse(resp_, nullptr, false);
    rt_body_ = json{{"ciphertext", j["data"]["ciphertext"]}}.dump();
    curl_easy_setopt(easy_, CURLOPT_URL, s_.decrypt_url.c_str());
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, rt_body_.c_str());
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE, static_cast<long>(rt_body_.size()));
    std::string e = Perform(true);
    curl_easy_setopt(easy_, CURLOPT_URL, s_.encrypt_url.c_str());
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDS, s_.encrypt_body.c_str());
    curl_easy_setopt(easy_, CURLOPT_POSTFIELDSIZE, static_cast<long>(s_.encrypt_body.size()));
    return e;
  }

  std::string Perform(bool decrypt) {
    if (!setup_ok_) return "libcurl rejected an option: " + setup_error_;
    resp_.clear();
    errbuf_[0] = '\0';
    const CURLcode rc = curl_easy_perform(easy_);
    if (rc != CURLE_OK) {
      return std::string("libcurl: ") + (errbuf_[0] != '\0' ? errbuf_ : curl_easy_strerror(rc));
    }
    long status = 0;
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
    long connects = 0;
    curl_easy_getinfo(easy_, CURLINFO_NUM_CONNECTS, &connects);
    connects_ += connects;
    if (status != 200) return "HTTP " + std::to_string(status) + ": " + resp_.substr(0, 300);
    // Parsing the answer is part of what a direct client has to do, so it is inside the timing.
    const json j = json::parse(resp_, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("data") || !j["data"].is_object()) {
      return "malformed response: " + resp_.substr(0, 300);
    }
    const json& data = j["data"];
    if (decrypt) {
      if (!data.contains("plaintext") || !data["plaintext"].is_string()) return "no data.plaintext";
      const auto pt = trousseau::base64::Decode(data["plaintext"].get<std::string>());
      if (!pt.ok() || *pt != kPlaintext) return "decrypt returned a different plaintext";
      return "";
    }
    if (!data.contains("ciphertext") || !data["ciphertext"].is_string() ||
        data["ciphertext"].get<std::string>().rfind("vault:v", 0) != 0) {
      return "no data.ciphertext \"vault:v...\"";
    }
    return "";
  }

  const std::string& LastResponse() const { return resp_; }
  long Connects() const override { return connects_; }

  std::string Transport() const override {
    long v = 0;
    curl_easy_getinfo(easy_, CURLINFO_HTTP_VERSION, &v);
    switch (v) {
      case CURL_HTTP_VERSION_1_0: return "HTTP/1.0";
      case CURL_HTTP_VERSION_1_1: return "HTTP/1.1";
      case CURL_HTTP_VERSION_2_0: return "HTTP/2";
      case CURL_HTTP_VERSION_3: return "HTTP/3";
      default: return "HTTP/?";
    }
  }

 private:
  CURL* easy_ = nullptr;
  curl_slist* headers_ = nullptr;
  bool setup_ok_ = false;
  long connects_ = 0;
  const VaultShared& s_;
  const bool decrypt_;
  const bool roundtrip_;
  std::string setup_error_;
  std::string rt_body_;
  std::string resp_;
  char errbuf_[CURL_ERROR_SIZE] = {};
};

std::string ReadToken(const std::string& path, std::string* err) {
  std::ifstream f(path);
  if (!f) {
    *err = "cannot read --token-file " + path;
    return "";
  }
  std::stringstream ss;
  ss << f.rdbuf();
  std::string t = ss.str();
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty()) *err = "--token-file " + path + " is empty";
  return t;
}

std::string SetupVault(const Options& o, VaultShared& s) {
  std::string err;
  const std::string token = ReadToken(o.token_file, &err);
  if (!err.empty()) return err;
  std::string base = o.addr;
  while (!base.empty() && base.back() == '/') base.pop_back();
  s.encrypt_url = base + "/v1/" + o.mount + "/encrypt/" + o.key_name;
  s.decrypt_url = base + "/v1/" + o.mount + "/decrypt/" + o.key_name;
  s.token_header = "X-Vault-Token: " + token;
  s.encrypt_body = json{{"plaintext", trousseau::base64::Encode(kPlaintext)}}.dump();
  if (o.op == "decrypt") {  // (roundtrip makes its own)
    // One encrypt (untimed) for a ciphertext to decrypt.
    VaultClient c(o, s, /*decrypt=*/false);
    if (std::string e = c.Call(); !e.empty()) return "setup encrypt: " + e;
    const json j = json::parse(c.LastResponse(), nullptr, false);
    if (j.is_discarded()) return "setup encrypt: malformed response";
    s.decrypt_body = json{{"ciphertext", j.at("data").at("ciphertext")}}.dump();
  }
  return "";
}

// ---------------------------------------------------------------- the run
struct Result {
  std::vector<int64_t> latencies_ns;
  long errors = 0;
  std::string first_error;
  double wall_s = 0;
  std::string transport;
  long connects = -1;  // new connections during the measured calls, or -1 when not known
};

Result Run(const Options& o, const std::function<std::unique_ptr<Client>()>& make_client) {
  const size_t threads = static_cast<size_t>(o.concurrency);
  std::vector<std::vector<int64_t>> per_thread(threads);
  std::vector<long> errors(threads, 0);
  std::vector<std::string> first_error(threads);
  std::vector<std::string> transport(threads);
  std::vector<long> connects(threads, -1);
  std::latch ready(static_cast<std::ptrdiff_t>(threads));
  std::latch go(1);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (size_t t = 0; t < threads; ++t) {
    const long share = o.n / o.concurrency + (static_cast<long>(t) < o.n % o.concurrency ? 1 : 0);
    pool.emplace_back([&, t, share] {
      auto client = make_client();
      auto note = [&](const std::string& e) {
        if (errors[t]++ == 0) first_error[t] = e;
      };
      for (long i = 0; i < o.warmup; ++i) {
        if (auto e = client->Call(); !e.empty()) note("warm-up: " + e);
      }
      std::vector<int64_t>& lat = per_thread[t];
      lat.reserve(static_cast<size_t>(share));
      const long connects_before = client->Connects();
      ready.count_down();
      go.wait();
      for (long i = 0; i < share && !g_stop.load(std::memory_order_relaxed); ++i) {
        if (o.pace_us > 0 && i > 0) std::this_thread::sleep_for(std::chrono::microseconds(o.pace_us));
        const auto t0 = Clock::now();
        std::string e = client->Call();
        const auto t1 = Clock::now();
        if (e.empty()) {
          lat.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
        } else {
          note(e);
        }
      }
      transport[t] = client->Transport();
      if (connects_before >= 0) connects[t] = client->Connects() - connects_before;
    });
  }
  ready.wait();
  const auto start = Clock::now();
  go.count_down();
  for (auto& th : pool) th.join();
  const auto end = Clock::now();

  Result r;
  r.wall_s = std::chrono::duration<double>(end - start).count();
  for (size_t t = 0; t < threads; ++t) {
    r.latencies_ns.insert(r.latencies_ns.end(), per_thread[t].begin(), per_thread[t].end());
    r.errors += errors[t];
    if (r.first_error.empty()) r.first_error = first_error[t];
    if (r.transport.empty()) r.transport = transport[t];
    if (connects[t] >= 0) r.connects = std::max(r.connects, 0L) + connects[t];
  }
  std::sort(r.latencies_ns.begin(), r.latencies_ns.end());
  return r;
}

// ---------------------------------------------------------------- cold-start burst
std::shared_ptr<grpc::Channel> ConnectPlugin(const Options& o, std::string* err) {
  auto ch = grpc::CreateChannel("unix:" + o.socket, grpc::InsecureChannelCredentials());
  if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
    *err = "cannot connect to unix:" + o.socket + " within 5 s";
    return nullptr;
  }
  return ch;
}

// Encrypts o.seeds distinct seeds over o.concurrency threads; writes one JSON line per seed.
int BurstPrepare(const Options& o) {
  std::string err;
  auto ch = ConnectPlugin(o, &err);
  if (!ch) {
    std::cerr << "trousseau-bench: burst-prepare: " << err << "\n";
    return 1;
  }
  auto stub = v2::KeyManagementService::NewStub(ch);
  std::vector<std::string> lines(static_cast<size_t>(o.seeds));
  std::atomic<long> next{0};
  std::atomic<long> errors{0};
  std::mutex mu;
  std::string first_error;
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (long t = 0; t < o.concurrency; ++t) {
    pool.emplace_back([&] {
      for (long i = next++; i < o.seeds; i = next++) {
        v2::EncryptRequest req;
        req.set_plaintext(SeedPlaintext(i));
        req.set_uid("trousseau-bench-burst-prepare");
        v2::EncryptResponse resp;
        grpc::ClientContext ctx;
        SetDeadline(ctx);
        const grpc::Status st = stub->Encrypt(&ctx, req, &resp);
        if (!st.ok()) {
          if (errors++ == 0) {
            std::lock_guard<std::mutex> l(mu);
            first_error = GrpcError("Encrypt", st);
          }
          continue;
        }
        json ann = json::object();
        for (const auto& [k, v] : resp.annotations()) ann[k] = trousseau::base64::Encode(v);
        lines[static_cast<size_t>(i)] = json{{"i", i},
                                             {"ciphertext", trousseau::base64::Encode(resp.ciphertext())},
                                             {"key_id", resp.key_id()},
                                             {"annotations", ann}}.dump();
      }
    });
  }
  for (auto& th : pool) th.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  if (errors > 0) {
    std::cerr << "trousseau-bench: burst-prepare: " << errors << " failed; first: " << first_error
              << "\n";
    return 1;
  }
  std::ofstream out(o.burst_file, std::ios::trunc);
  for (const auto& l : lines) out << l << '\n';
  out.flush();
  if (!out) {
    std::cerr << "trousseau-bench: cannot write --burst-file " << o.burst_file << "\n";
    return 1;
  }
  std::cout << json{{"mode", "plugin"}, {"op", "burst-prepare"}, {"seeds", o.seeds},
                    {"concurrency", o.concurrency}, {"wall_s", wall}}.dump()
            << std::endl;
  return 0;
}

// Decrypts every seed of the burst file o.dups times, duplicates next to each other in the queue.
Result RunBurst(const Options& o, std::string* err) {
  Result r;
  std::ifstream in(o.burst_file);
  if (!in) {
    *err = "cannot read --burst-file " + o.burst_file;
    return r;
  }
  std::vector<v2::DecryptRequest> reqs;
  std::vector<std::string> plaintexts;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("i") || !j.contains("ciphertext")) {
      *err = "malformed line in " + o.burst_file;
      return r;
    }
    v2::DecryptRequest req;
    auto ct = trousseau::base64::Decode(j["ciphertext"].get<std::string>());
    if (!ct.ok()) {
      *err = "bad ciphertext base64 in " + o.burst_file;
      return r;
    }
    req.set_ciphertext(*ct);
    req.set_key_id(j["key_id"].get<std::string>());
    req.set_uid("trousseau-bench-burst");
    for (const auto& [k, v] : j["annotations"].items()) {
      auto val = trousseau::base64::Decode(v.get<std::string>());
      if (!val.ok()) {
        *err = "bad annotation base64 in " + o.burst_file;
        return r;
      }
      (*req.mutable_annotations())[k] = *val;
    }
    reqs.push_back(std::move(req));
    plaintexts.push_back(SeedPlaintext(j["i"].get<long>()));
  }
  if (reqs.empty()) {
    *err = o.burst_file + " holds no seeds";
    return r;
  }
  auto ch = ConnectPlugin(o, err);
  if (!ch) return r;
  auto stub = v2::KeyManagementService::NewStub(ch);
  const long total = static_cast<long>(reqs.size()) * o.dups;
  const size_t threads = static_cast<size_t>(o.concurrency);
  std::vector<std::vector<int64_t>> per_thread(threads);
  std::vector<long> errors(threads, 0);
  std::vector<std::string> first_error(threads);
  std::atomic<long> next{0};
  std::latch ready(static_cast<std::ptrdiff_t>(threads));
  std::latch go(1);
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready.count_down();
      go.wait();
      for (long k = next++; k < total && !g_stop.load(std::memory_order_relaxed); k = next++) {
        const size_t seed = static_cast<size_t>(k / o.dups);
        grpc::ClientContext ctx;
        SetDeadline(ctx);
        v2::DecryptResponse resp;
        const auto t0 = Clock::now();
        const grpc::Status st = stub->Decrypt(&ctx, reqs[seed], &resp);
        const auto t1 = Clock::now();
        std::string e;
        if (!st.ok()) e = GrpcError("Decrypt", st);
        else if (resp.plaintext() != plaintexts[seed]) e = "Decrypt returned a different plaintext";
        if (e.empty()) {
          per_thread[t].push_back(
              std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
        } else if (errors[t]++ == 0) {
          first_error[t] = e;
        }
      }
    });
  }
  ready.wait();
  const auto start = Clock::now();
  go.count_down();
  for (auto& th : pool) th.join();
  r.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  for (size_t t = 0; t < threads; ++t) {
    r.latencies_ns.insert(r.latencies_ns.end(), per_thread[t].begin(), per_thread[t].end());
    r.errors += errors[t];
    if (r.first_error.empty()) r.first_error = first_error[t];
  }
  std::sort(r.latencies_ns.begin(), r.latencies_ns.end());
  return r;
}

// Nearest-rank percentile in microseconds.
double PercentileUs(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1000.0;
}

std::string Fixed(double v, int decimals) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(decimals);
  s << v;
  return s.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseArgs(argc, argv);
  struct sigaction sa {};
  sa.sa_handler = &OnStop;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  if (o.op == "burst-prepare") return BurstPrepare(o);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    std::cerr << "trousseau-bench: libcurl global initialisation failed\n";
    return 1;
  }
  const bool decrypt = o.op == "decrypt";
  PluginShared plugin;
  VaultShared vault;
  Result burst;
  std::string err;
  if (o.op == "burst") {
    o.warmup = 0;
    burst = RunBurst(o, &err);
    o.n = static_cast<long>(burst.latencies_ns.size()) + burst.errors;
  } else {
    err = o.mode == "plugin" ? SetupPlugin(o, plugin) : SetupVault(o, vault);
  }
  if (!err.empty()) {
    std::cerr << "trousseau-bench: " << o.mode << " " << o.op << ": " << err << "\n";
    return 1;
  }
  std::function<std::unique_ptr<Client>()> make;
  if (o.mode == "plugin") {
    make = [&] { return std::make_unique<PluginClient>(plugin, o.op); };
  } else {
    make = [&] { return std::make_unique<VaultClient>(o, vault, decrypt, o.op == "roundtrip"); };
  }
  const Result r = o.op == "burst" ? std::move(burst) : Run(o, make);
  curl_global_cleanup();

  const auto& l = r.latencies_ns;
  if (!o.latencies_out.empty()) {
    std::ofstream out(o.latencies_out, std::ios::trunc);
    for (int64_t x : l) out << x << '\n';
    out.flush();
    if (!out) {
      std::cerr << "trousseau-bench: cannot write --latencies-out " << o.latencies_out << "\n";
      return 1;
    }
  }
  const double ok = static_cast<double>(l.size());
  double mean = 0;
  for (int64_t x : l) mean += static_cast<double>(x);
  mean = l.empty() ? 0 : mean / ok / 1000.0;
  const double p50 = PercentileUs(l, 50), p90 = PercentileUs(l, 90), p99 = PercentileUs(l, 99);
  const double min = l.empty() ? 0 : static_cast<double>(l.front()) / 1000.0;
  const double max = l.empty() ? 0 : static_cast<double>(l.back()) / 1000.0;
  const double per_s = r.wall_s > 0 ? ok / r.wall_s : 0;
  const std::string transport = o.mode == "plugin" ? "gRPC/UDS" : r.transport;

  if (o.json) {
    json j = {{"mode", o.mode},
              {"op", o.op},
              {"n", o.n},
              {"concurrency", o.concurrency},
              {"warmup_per_thread", o.warmup},
              {"ok", l.size()},
              {"errors", r.errors},
              {"p50_us", p50},
              {"p90_us", p90},
              {"p99_us", p99},
              {"mean_us", mean},
              {"min_us", min},
              {"max_us", max},
              {"wall_s", r.wall_s},
              {"throughput_per_s", per_s},
              {"transport", transport},
              {"new_connections", r.connects},
              {"plaintext_bytes", kPlaintext.size()}};
    if (!r.first_error.empty()) j["first_error"] = r.first_error;
    std::cout << j.dump() << std::endl;
  } else {
    std::cout << o.mode << " " << o.op << " n=" << o.n << " c=" << o.concurrency
              << " p50_us=" << Fixed(p50, 1) << " p90_us=" << Fixed(p90, 1)
              << " p99_us=" << Fixed(p99, 1) << " throughput_per_s=" << Fixed(per_s, 1)
              << " errors=" << r.errors << " transport=" << transport;
    if (r.connects >= 0) std::cout << " new_connections=" << r.connects;
    std::cout << std::endl;
  }
  if (r.errors > 0) {
    std::cerr << "trousseau-bench: " << r.errors << " failed call(s); first: " << r.first_error
              << "\n";
    return 1;
  }
  return 0;
}
