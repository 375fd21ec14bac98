#include "observability/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace trousseau::metrics {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// The bounded label values, "other" last (the value anything unknown becomes).
constexpr std::string_view kApis[] = {"v2", "v1beta1", "other"};
constexpr std::string_view kMethods[] = {"Status", "Encrypt", "Decrypt", "Version", "other"};
constexpr std::string_view kCodes[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    "other"};
constexpr std::string_view kEndpoints[] = {"lookup_self", "renew_self", "health",
                                           "capabilities", "login",      "encrypt",
                                           "decrypt",     "keys",       "other"};
constexpr std::string_view kStatusClasses[] = {"2xx", "3xx", "4xx", "5xx", "error"};

// Index of v in a table ending in "other"; unknown values get the last index.
template <size_t N>
size_t IndexOf(std::string_view v, const std::string_view (&table)[N]) {
  for (size_t i = 0; i + 1 < N; ++i) {
    if (table[i] == v) return i;
  }
  return N - 1;
}

// Metric handles by label indices, each looked up once in its family (the registry owns them and
// never removes one, so a pointer stays valid). Races fill a slot with the same pointer twice.
template <typename M, size_t A, size_t B, size_t C>
class HandleCache {
 public:
  template <typename Lookup>
  M& Get(size_t a, size_t b, size_t c, Lookup lookup) {
    std::atomic<M*>& slot = slots_[(a * B + b) * C + c];
    M* m = slot.load(std::memory_order_acquire);
    if (m == nullptr) {
      m = lookup();
      slot.store(m, std::memory_order_release);
    }
    return *m;
  }

 private:
  std::array<std::atomic<M*>, A * B * C> slots_{};
};

// Latency buckets: a KMS call is a Vault round trip (ms on a LAN, up to the 30 s call cap).
const Histogram::BucketBoundaries& LatencyBuckets() {
  static const Histogram::BucketBoundaries b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                0.25,  0.5,    1,     2.5,  5,     10,   30};
  return b;
}

// Families registered once, on first use; the registry owns them.
struct Families {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  Family<Counter>& kms_requests = prometheus::BuildCounter()
      .Name("trousseau_kms_requests_total")
      .Help("KMS gRPC calls by API version, method and gRPC status code.")
      .Register(*registry);
  Family<Histogram>& kms_duration = prometheus::BuildHistogram()
      .Name("trousseau_kms_request_duration_seconds")
      .Help("KMS gRPC call latency, as the plugin measures it (includes Vault).")
      .Register(*registry);
  Family<Gauge>& kms_in_flight = prometheus::BuildGauge()
      .Name("trousseau_kms_in_flight_requests")
      .Help("KMS gRPC calls being served now.")
      .Register(*registry);
  Family<Gauge>& kms_max_in_flight = prometheus::BuildGauge()
      .Name("trousseau_kms_max_in_flight")
      .Help("The configured limit of concurrent calls of a method (limits.max_in_flight.*).")
      .Register(*registry);
  Family<Counter>& kms_shed = prometheus::BuildCounter()
      .Name("trousseau_kms_shed_total")
      .Help("Calls refused with RESOURCE_EXHAUSTED because the method's limit was reached.")
      .Register(*registry);
  Family<Counter>& vault_requests = prometheus::BuildCounter()
      .Name("trousseau_vault_requests_total")
      .Help("HTTP attempts to Vault by endpoint class, node and status class (error: no answer).")
      .Register(*registry);
  Family<Histogram>& vault_duration = prometheus::BuildHistogram()
      .Name("trousseau_vault_request_duration_seconds")
      .Help("Latency of one HTTP attempt to Vault, by endpoint class.")
      .Register(*registry);
  Counter& failovers = prometheus::BuildCounter()
      .Name("trousseau_vault_failovers_total")
      .Help("Times a Vault node failed or was unavailable and the next address was tried.")
      .Register(*registry).Add({});
  Gauge& vault_waiting = prometheus::BuildGauge()
      .Name("trousseau_vault_requests_waiting")
      .Help("Vault requests waiting for one of the slots for concurrent Vault requests.")
      .Register(*registry).Add({});
  Counter& redirects_refused = prometheus::BuildCounter()
      .Name("trousseau_vault_redirects_refused_total")
      .Help("Standby redirects not followed because the target is not in vault.addresses.")
      .Register(*registry).Add({});
  Counter& redirects_followed = prometheus::BuildCounter()
      .Name("trousseau_vault_redirects_followed_total")
      .Help("Standby redirects followed to an address in vault.addresses.")
      .Register(*registry).Add({});
  Family<Histogram>& vault_batch_size = prometheus::BuildHistogram()
      .Name("trousseau_vault_batch_size")
      .Help("Items per Transit call made by the batcher (1: sent alone), by operation.")
      .Register(*registry);
  Counter& kms_coalesced = prometheus::BuildCounter()
      .Name("trousseau_kms_coalesced_total")
      .Help("Decrypt calls answered by an identical call already in flight (no Vault call).")
      .Register(*registry).Add({});
  Family<Gauge>& build_info = prometheus::BuildGauge()
      .Name("trousseau_build_info")
      .Help("Always 1; the labels name the build.")
      .Register(*registry);

  std::mutex mu;  // guards the fields below
  std::vector<std::string> nodes;
  using VaultRequestHandles = std::vector<
      std::array<std::array<Counter*, std::size(kStatusClasses)>, std::size(kEndpoints)>>;
  // trousseau_vault_requests_total's handles by [node index (nodes.size(): "other")][endpoint
  // class][status class], filled on first use; kept while `nodes` stays the same.
  VaultRequestHandles vault_request_handles =
      VaultRequestHandles(1);
  StateProvider state;
  std::function<uint64_t()> audit_dropped;
};

Families& F() {
  static Families* f = new Families();  // never destroyed: metrics outlive every thread
  return *f;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

// ---- scrape-time families --------------------------------------------------------------------

prometheus::MetricFamily OneValue(const std::string& name, const std::string& help,
                                  prometheus::MetricType type, double value,
                                  std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::MetricFamily fam;
  fam.name = name;
  fam.help = help;
  fam.type = type;
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  fam.metric.push_back(std::move(m));
  return fam;
}

prometheus::MetricFamily Outcomes(const std::string& name, const std::string& help, uint64_t ok,
                                  uint64_t failed) {
  prometheus::MetricFamily fam;
  fam.name = name;
  fam.help = help;
  fam.type = prometheus::MetricType::Counter;
  for (auto [outcome, v] : {std::pair<const char*, uint64_t>{"success", ok}, {"failure", failed}}) {
    prometheus::ClientMetric m;
    m.label = {{"outcome", outcome}};
    m.counter.value = static_cast<double>(v);
    fam.metric.push_back(std::move(m));
  }
  return fam;
}

// /proc/self: the standard process_* metrics (prometheus-cpp core does not provide them).
struct ProcessStats {
  bool ok = false;
  double cpu_seconds = 0, start_time = 0, rss = 0, vsize = 0, threads = 0, open_fds = 0, max_fds = 0;
};

double BootTime() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime") {
      in >> value;
      return value;
    }
    in.ignore(4096, '\n');
  }
  return 0;
}

ProcessStats ReadProcess() {
  ProcessStats p;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return p;
  // The command name (field 2) may hold spaces: parse after its closing parenthesis.
  const auto rp = line.rfind(')');
  if (rp == std::string::npos) return p;
  std::istringstream rest(line.substr(rp + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string tok; rest >> tok;) f.push_back(tok);
  if (f.size() < 22) return p;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  p.cpu_seconds = (std::stod(f[11]) + std::stod(f[12])) / tick;  // utime + stime (fields 14, 15)
  p.threads = std::stod(f[17]);                                   // field 20
  p.start_time = BootTime() + std::stod(f[19]) / tick;            // field 22, ticks after boot
  p.vsize = std::stod(f[20]);                                     // field 23, bytes
  p.rss = std::stod(f[21]) * page;                                // field 24, pages
  if (DIR* d = opendir("/proc/self/fd")) {
    size_t n = 0;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    closedir(d);
    p.open_fds = static_cast<double>(n > 0 ? n - 1 : 0);  // minus the directory's own fd
  }
  std::ifstream limits("/proc/self/limits");
  for (std::string l; std::getline(limits, l);) {
    if (StartsWith(l, "Max open files")) {
      std::istringstream ls(l.substr(std::string_view("Max open files").size()));
      std::string soft;
      ls >> soft;
      p.max_fds = soft == "unlimited" ? -1 : std::stod(soft);
    }
  }
  p.ok = true;
  return p;
}

std::vector<prometheus::MetricFamily> CollectState() {
  using prometheus::MetricType;
  Families& f = F();
  StateProvider state;
  std::function<uint64_t()> dropped;
  {
    std::lock_guard<std::mutex> lock(f.mu);
    state = f.state;
    dropped = f.audit_dropped;
  }
  std::vector<prometheus::MetricFamily> out;
  const RuntimeState s = state ? state() : RuntimeState{};
  out.push_back(OneValue("trousseau_vault_token_ttl_seconds",
                         "Remaining TTL of the current Vault token; -1 unknown or not expiring.",
                         MetricType::Gauge, s.token_ttl_seconds));
  out.push_back(Outcomes("trousseau_vault_token_renewals_total", "Vault token renewals by outcome.",
                         s.renewals_success, s.renewals_failure));
  out.push_back(Outcomes("trousseau_vault_logins_total", "Vault logins by outcome.",
                         s.logins_success, s.logins_failure));
  out.push_back(OneValue("trousseau_transit_key_version",
                         "Latest Transit key version the background check saw; 0 before the first.",
                         MetricType::Gauge, static_cast<double>(s.key_version)));
  prometheus::MetricFamily info;
  info.name = "trousseau_key_info";
  info.help = "Always 1; key_id is the current key identity Status reports.";
  info.type = MetricType::Gauge;
  if (!s.key_id.empty()) {
    prometheus::ClientMetric m;
    m.label = {{"key_id", s.key_id}};
    m.gauge.value = 1;
    info.metric.push_back(std::move(m));
  }
  out.push_back(std::move(info));
  out.push_back(OneValue("trousseau_vault_last_success_age_seconds",
                         "Seconds since the last successful background Vault check; -1 never.",
                         MetricType::Gauge, s.last_success_age_seconds));
  out.push_back(OneValue("trousseau_healthy", "1 when Status reports healthz \"ok\".",
                         MetricType::Gauge, s.healthy ? 1 : 0));
  out.push_back(OneValue("trousseau_transit_key_rollbacks_total",
                         "Times the Transit key was newly seen rolled back or replaced.",
                         MetricType::Counter, static_cast<double>(s.key_rollbacks)));
  out.push_back(OneValue("trousseau_transit_key_rollback",
                         "1 while Encrypt is refused because the Transit key was rolled back.",
                         MetricType::Gauge, s.key_rollback_active ? 1 : 0));
  if (s.secondary_configured) {
    out.push_back(OneValue("trousseau_secondary_up",
                           "1 while the secondary Vault wraps new seeds (docs/secondary.md).",
                           MetricType::Gauge, s.secondary_up ? 1 : 0));
    out.push_back(OneValue("trousseau_primary_up",
                           "1 while the primary Vault's last background check succeeded.",
                           MetricType::Gauge, s.primary_up ? 1 : 0));
    out.push_back(OneValue("trousseau_secondary_key_version",
                           "Latest secondary Transit key version seen; 0 before the first.",
                           MetricType::Gauge, static_cast<double>(s.secondary_key_version)));
    out.push_back(OneValue("trousseau_secondary_unwrapped_total",
                           "Seeds wrapped by the primary only because the secondary was down.",
                           MetricType::Counter, static_cast<double>(s.secondary_unwrapped)));
    out.push_back(OneValue("trousseau_secondary_fallbacks_total",
                           "Decrypts answered from the secondary's copy: the primary was unavailable.",
                           MetricType::Counter, static_cast<double>(s.secondary_fallbacks)));
  }
  if (s.state_file_configured) {
    out.push_back(OneValue("trousseau_state_file_write_failures_total",
                           "Writes of state.file that failed; the key's high-water mark was kept "
                           "in memory only (docs/rollback.md).",
                           MetricType::Counter, static_cast<double>(s.state_file_write_failures)));
  }
  out.push_back(OneValue("trousseau_audit_records_dropped_total",
                         "Audit and log lines dropped because stderr stalled.",
                         MetricType::Counter, dropped ? static_cast<double>(dropped()) : 0));

  const ProcessStats p = ReadProcess();
  if (p.ok) {
    out.push_back(OneValue("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                           MetricType::Counter, p.cpu_seconds));
    out.push_back(OneValue("process_resident_memory_bytes", "Resident memory size in bytes.",
                           MetricType::Gauge, p.rss));
    out.push_back(OneValue("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                           MetricType::Gauge, p.vsize));
    out.push_back(OneValue("process_open_fds", "Number of open file descriptors.",
                           MetricType::Gauge, p.open_fds));
    out.push_back(OneValue("process_max_fds", "Maximum number of open file descriptors.",
                           MetricType::Gauge, p.max_fds));
    out.push_back(OneValue("process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.",
                           MetricType::Gauge, p.start_time));
    out.push_back(OneValue("process_threads", "Number of OS threads in the process.",
                           MetricType::Gauge, p.threads));
  }
  return out;
}

}  // namespace

// ---- classification --------------------------------------------------------------------------

std::string_view VaultEndpointClass(std::string_view path) {
  path = path.substr(0, path.find_first_of("?#"));
  if (!StartsWith(path, "/v1/")) return "other";
  if (path == "/v1/auth/token/lookup-self") return "lookup_self";
  if (path == "/v1/auth/token/renew-self") return "renew_self";
  if (path == "/v1/sys/health") return "health";
  if (path == "/v1/sys/capabilities-self" || path == "/v1/sys/capabilities") return "capabilities";
  const size_t last = path.rfind('/');
  const std::string_view tail = path.substr(last + 1);
  if (StartsWith(path, "/v1/auth/")) return tail == "login" ? "login" : "other";
  // "/v1/<mount...>/<op>/<key>": the transit operation is the segment before the key name.
  if (last <= 4) return "other";
  const std::string_view head = path.substr(0, last);
  const std::string_view op = head.substr(head.rfind('/') + 1);
  if (tail.empty() || head.rfind('/') < 4) return "other";
  if (op == "encrypt") return "encrypt";
  if (op == "decrypt") return "decrypt";
  if (op == "keys") return "keys";
  return "other";
}

std::string_view StatusClass(long s) {
  if (s >= 200 && s < 300) return "2xx";
  if (s >= 300 && s < 400) return "3xx";
  if (s >= 400 && s < 500) return "4xx";
  if (s >= 500 && s < 600) return "5xx";
  return "error";
}

std::string_view BoundedApi(std::string_view api) { return kApis[IndexOf(api, kApis)]; }

std::string_view BoundedMethod(std::string_view m) { return kMethods[IndexOf(m, kMethods)]; }

std::string_view BoundedCode(std::string_view c) { return kCodes[IndexOf(c, kCodes)]; }

// ---- recording -------------------------------------------------------------------------------

void ObserveKms(std::string_view api, std::string_view method, std::string_view code,
                double seconds) {
  // The handles of each label combination, looked up in the family once (Family::Add hashes the
  // labels and takes the family's lock on every call; the profile put it at ~3 % of the CPU).
  static HandleCache<Counter, std::size(kApis), std::size(kMethods), std::size(kCodes)> requests;
  static HandleCache<Histogram, std::size(kApis), std::size(kMethods), 1> durations;
  Families& f = F();
  const size_t a = IndexOf(api, kApis), m = IndexOf(method, kMethods), c = IndexOf(code, kCodes);
  requests.Get(a, m, c, [&] {
    return &f.kms_requests.Add({{"api", std::string(kApis[a])},
                                {"method", std::string(kMethods[m])},
                                {"code", std::string(kCodes[c])}});
  }).Increment();
  durations.Get(a, m, 0, [&] {
    return &f.kms_duration.Add({{"api", std::string(kApis[a])},
                                {"method", std::string(kMethods[m])}},
                               LatencyBuckets());
  }).Observe(seconds);
}

KmsInFlight::KmsInFlight(std::string_view api, std::string_view method) {
  static HandleCache<Gauge, std::size(kApis), std::size(kMethods), 1> gauges;
  const size_t a = IndexOf(api, kApis), m = IndexOf(method, kMethods);
  Gauge& g = gauges.Get(a, m, 0, [&] {
    return &F().kms_in_flight.Add({{"api", std::string(kApis[a])}, {"method", std::string(kMethods[m])}});
  });
  g.Increment();
  gauge_ = &g;
}

KmsInFlight::~KmsInFlight() { static_cast<Gauge*>(gauge_)->Decrement(); }

void SetKmsMaxInFlight(std::string_view method, uint32_t max) {
  Families& f = F();
  const std::string m(BoundedMethod(method));
  f.kms_max_in_flight.Add({{"method", m}}).Set(static_cast<double>(max));
  f.kms_shed.Add({{"method", m}});
}

void KmsShed(std::string_view method) {
  F().kms_shed.Add({{"method", std::string(BoundedMethod(method))}}).Increment();
}

void SetVaultNodes(const std::vector<std::string>& nodes) {
  Families& f = F();
  std::lock_guard<std::mutex> lock(f.mu);
  f.nodes = nodes;
  f.vault_request_handles.assign(nodes.size() + 1, {});  // the last: node "other"
}

void ObserveVault(std::string_view path, std::string_view node, long http_status, double seconds) {
  static HandleCache<Histogram, std::size(kEndpoints), 1, 1> durations;
  Families& f = F();
  const size_t e = IndexOf(VaultEndpointClass(path), kEndpoints);
  const size_t s = IndexOf(StatusClass(http_status), kStatusClasses);
  Counter* requests = nullptr;
  {
    // The node label: one of the configured addresses (their handles kept with them), or "other".
    std::lock_guard<std::mutex> lock(f.mu);
    size_t n = 0;
    while (n < f.nodes.size() && f.nodes[n] != node) ++n;
    Counter*& slot = f.vault_request_handles[n][e][s];
    if (slot == nullptr) {
      slot = &f.vault_requests.Add({{"endpoint", std::string(kEndpoints[e])},
                                    {"node", n < f.nodes.size() ? f.nodes[n] : "other"},
                                    {"status_class", std::string(kStatusClasses[s])}});
    }
    requests = slot;
  }
  requests->Increment();
  durations.Get(e, 0, 0, [&] {
    return &f.vault_duration.Add({{"endpoint", std::string(kEndpoints[e])}}, LatencyBuckets());
  }).Observe(seconds);
}

void VaultFailover() { F().failovers.Increment(); }

VaultRequestWaiting::VaultRequestWaiting() { F().vault_waiting.Increment(); }
VaultRequestWaiting::~VaultRequestWaiting() { F().vault_waiting.Decrement(); }

void ObserveVaultBatch(std::string_view op, size_t items) {
  static const Histogram::BucketBoundaries buckets = {1, 2, 4, 8, 16, 32, 64, 128};
  static constexpr std::string_view kOps[] = {"encrypt", "decrypt", "other"};
  static HandleCache<Histogram, std::size(kOps), 1, 1> sizes;
  const size_t o = IndexOf(op, kOps);
  sizes.Get(o, 0, 0, [&] {
    return &F().vault_batch_size.Add({{"op", std::string(kOps[o])}}, buckets);
  }).Observe(static_cast<double>(items));
}

void KmsCoalesced() { F().kms_coalesced.Increment(); }
void VaultRedirectRefused() { F().redirects_refused.Increment(); }
void VaultRedirectFollowed() { F().redirects_followed.Increment(); }

void SetStateProvider(StateProvider provider) {
  Families& f = F();
  std::lock_guard<std::mutex> lock(f.mu);
  f.state = std::move(provider);
}

void SetAuditDroppedSource(std::function<uint64_t()> source) {
  Families& f = F();
  std::lock_guard<std::mutex> lock(f.mu);
  f.audit_dropped = std::move(source);
}

void SetBuildInfo(std::string_view version, std::string_view revision,
                  std::string_view tls_library) {
  F().build_info
      .Add({{"version", std::string(version)},
            {"revision", std::string(revision)},
            {"tls_library", std::string(tls_library)}})
      .Set(1);
}

std::string ShortTlsLibraryName(std::string_view v) {
  // The library name and its version number: the first two words.
  const size_t first = v.find(' ');
  if (first == std::string_view::npos) return std::string(v.substr(0, 64));
  const size_t second = v.find(' ', first + 1);
  return std::string(v.substr(0, std::min<size_t>(second, 64)));
}

std::string Exposition() {
  auto families = F().registry->Collect();
  auto state = CollectState();
  families.insert(families.end(), std::make_move_iterator(state.begin()),
                  std::make_move_iterator(state.end()));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace trousseau::metrics
