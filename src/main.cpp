// trousseau: a Kubernetes KMS v2 (and v1beta1) plugin backed by Vault/OpenBao Transit.
// main() reads top to bottom as the startup order; each step says why it is where it is.
#include <grpcpp/grpcpp.h>
#include <google/protobuf/stubs/common.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "cli/cli.h"
#include "common/tls_library.h"
#include "cli/doctor.h"
#include "config/config.h"
#include "envelope/key_service.h"
#include "envelope/redundant_key_service.h"
#include "hardening/privileges.h"
#include "hardening/seccomp.h"
#include "hardening/secret_buffer.h"
#include "hardening/wipe_on_free.h"
#include "kms/malloc_env.h"
#include "kms/server_tuning.h"
#include "kms/services.h"
#include "kms/status_loop.h"
#include "kms/socket.h"
#include "observability/http_server.h"
#include "observability/log.h"
#include "observability/metrics.h"
#include "observability/probes.h"
#include "trousseau/version.h"
#include "vault/curl_transport.h"
#include "vault/tls_material.h"
#include "vault/auth/factory.h"
#include "vault/auth/login_token_source.h"
#include "vault/auth/token_file_renewer.h"
#include "vault/transit_client.h"

namespace {

using namespace trousseau;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

int Die(int code, const std::string& line) {
  // Queued lines first (bounded), then this one; not if stderr is stuck (it would block exit).
  if (log::StopWriter(std::chrono::seconds(1))) std::fprintf(stderr, "trousseau: %s\n", line.c_str());
  return code;
}

void PrintUsage(FILE* out) {
  std::fprintf(out,
               "Usage:\n"
               "  trousseau serve --config FILE         run the KMS plugin\n"
               "  trousseau check-config --config FILE  validate the config and the files it names\n"
               "  trousseau version                     print version and linked libraries\n"
               "  trousseau seccomp-profile             print the container runtime seccomp profile\n"
               "  trousseau seccomp-rules               list the in-process syscall allowlist\n");
  std::fprintf(out, "\nOperator commands (each has --help; docs/cli.md):\n");
  for (const auto& c : cli::Summaries()) std::fprintf(out, "  trousseau %-35s %s\n", c.usage, c.what);
  std::fprintf(out, "\nExit codes: 0 ok, 1 failed or unhealthy, 2 usage error; doctor: 2 warnings only, 64 usage "
                    "error (docs/doctor.md).\n");
}

int Version() {
  std::printf("trousseau %s (git %s)\n", TROUSSEAU_VERSION, TROUSSEAU_GIT_REVISION);
  std::printf("grpc %s\n", grpc::Version().c_str());
  std::printf("protobuf %s\n",
              google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION).c_str());
  std::printf("tls %s (%s)\n", common::TlsLibraryVersion().c_str(), common::TlsLibraryLinkage());
  std::printf("libcurl %s\n", vault::CurlTransport::LibraryVersion().c_str());
  std::printf("libcurl linkage: %s\n", vault::CurlTransport::LibraryLinkage());
  std::printf("libcurl protocols: %s\n", vault::CurlTransport::LibraryProtocols().c_str());
  std::printf("libcurl features: %s\n", vault::CurlTransport::LibraryFeatures().c_str());
  std::printf("kms apis v2, v1beta1\n");
  return kExitOk;
}

log::Level ToLogLevel(config::LogLevel l) {
  switch (l) {
    case config::LogLevel::kDebug: return log::Level::kDebug;
    case config::LogLevel::kInfo: return log::Level::kInfo;
    case config::LogLevel::kWarn: return log::Level::kWarn;
    case config::LogLevel::kError: return log::Level::kError;
  }
  return log::Level::kInfo;
}

// vault.secondary (docs/secondary.md): the second cluster's own trust, transport, token and key.
struct SecondaryVault {
  std::shared_ptr<const vault::TlsMaterial> tls;
  std::unique_ptr<vault::CurlTransport> http;
  std::unique_ptr<vault::TokenSource> tokens;
  std::unique_ptr<vault::auth::TokenFileRenewer> renewer;
  std::unique_ptr<vault::TransitClient> transit;
  std::unique_ptr<envelope::TransitKeyService> keys;
};

// Everything the serve command builds, in dependency order (destroyed in reverse).
struct Plugin {
  std::shared_ptr<const vault::TlsMaterial> tls;
  std::unique_ptr<vault::CurlTransport> http;
  std::unique_ptr<vault::TokenSource> tokens;  // a login source uses `http`: destroyed first
  std::unique_ptr<vault::auth::TokenFileRenewer> renewer;  // token file: keeps the token alive
  std::unique_ptr<vault::TransitClient> transit;
  std::unique_ptr<envelope::StateFile> state;  // state.file: outlives `keys`, which writes it
  std::unique_ptr<envelope::TransitKeyService> keys;
  std::unique_ptr<SecondaryVault> secondary;                  // null without vault.secondary
  std::unique_ptr<envelope::RedundantKeyService> redundant;   // over keys + secondary->keys
  std::unique_ptr<kms::CallLimits> limits;
  std::unique_ptr<kms::V2Service> v2;
  std::unique_ptr<kms::V1Beta1Service> v1;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<kms::StatusLoop> status_loop;  // Status/Version: destroyed before the server
  // The operations listener reads everything above: declared last, destroyed first.
  std::unique_ptr<observability::LivenessChecker> liveness;
  std::unique_ptr<observability::HttpServer> ops;

  // What the KMS v2 API, Status and the probes see.
  const envelope::KeyService& v2_keys() const {
    return redundant ? static_cast<const envelope::KeyService&>(*redundant) : *keys;
  }
};

// vault.secondary, step 2: its trust material and credentials, checked like the primary's.
absl::Status LoadSecondaryTrust(Plugin& p, const config::SecondaryConfig& sc,
                                const config::Config& cfg) {
  p.secondary = std::make_unique<SecondaryVault>();
  auto tls = vault::TlsMaterial::Load(sc.vault.tls);
  if (!tls.ok()) return absl::InvalidArgumentError("vault.secondary: " + std::string(tls.status().message()));
  p.secondary->tls = *tls;
  if (auto st = vault::auth::CheckCredentials(
          sc.vault.auth, p.secondary->tls->has_client_identity(),
          hardening::RunningAsRoot() ? std::optional<uint32_t>(cfg.privileges.uid) : std::nullopt);
      !st.ok()) {
    return absl::InvalidArgumentError("vault.secondary: " + std::string(st.message()));
  }
  return absl::OkStatus();
}

// vault.secondary, after the primary's key service: the second cluster's transport, token
// source, Transit client and key service, built the same way, and the redundant decorator.
absl::Status BuildSecondary(Plugin& p, const config::SecondaryConfig& sc,
                            envelope::TransitKeyServiceOptions kopts) {
  SecondaryVault& s = *p.secondary;
  auto http = vault::CurlTransport::Create(sc.vault, s.tls);
  if (!http.ok()) return absl::InvalidArgumentError("vault.secondary: " + std::string(http.status().message()));
  s.http = std::move(*http);
  auto tokens = vault::auth::MakeTokenSource(sc.vault, *s.http, SystemClock());
  if (!tokens.ok()) return absl::InvalidArgumentError("vault.secondary: " + std::string(tokens.status().message()));
  s.tokens = std::move(*tokens);
  s.transit = std::make_unique<vault::TransitClient>(*s.http, *s.tokens, sc.vault.transit_mount,
                                                     sc.vault.transit_key);
  kopts.namespace_ = sc.vault.namespace_;
  kopts.check_timeout = sc.vault.request_timeout;
  // Its own entry in state.file: the two clusters' keys often share a name.
  kopts.state_entry_prefix = "secondary:";
  s.keys = std::make_unique<envelope::TransitKeyService>(*s.transit, SystemClock(), kopts);
  if (sc.vault.auth.method == config::AuthMethod::kToken && sc.vault.auth.renew_token) {
    vault::auth::RenewerOptions ropts;
    ropts.request_timeout = sc.vault.request_timeout;
    s.renewer = std::make_unique<vault::auth::TokenFileRenewer>(*s.tokens, *s.http, SystemClock(),
                                                                ropts);
  }
  envelope::RedundantKeyServiceOptions ropts;
  ropts.policy = sc.policy == config::SecondaryPolicy::kBestEffort
                     ? envelope::SecondaryPolicy::kBestEffort
                     : envelope::SecondaryPolicy::kRequired;
  ropts.secondary_first = sc.secondary_first;
  ropts.secondary_name = sc.vault.addresses.front();
  p.redundant = std::make_unique<envelope::RedundantKeyService>(*p.keys, *s.keys, SystemClock(), ropts);
  return absl::OkStatus();
}

// Scrape-time state for /metrics, read from the components' own thread-safe snapshots.
metrics::RuntimeState ReadState(const Plugin& p, const vault::auth::LoginTokenSource* login) {
  metrics::RuntimeState s;
  if (login != nullptr) {
    const auto snap = login->Snapshot();
    s.token_ttl_seconds = snap.expires ? static_cast<double>(snap.remaining_ttl.count()) / 1000.0 : -1;
    s.logins_success = snap.login_count;
    s.logins_failure = snap.login_failures;
    s.renewals_success = snap.renewal_count;
    s.renewals_failure = snap.renewal_failures;
  } else if (p.renewer) {
    const auto snap = p.renewer->Snapshot();
    if (snap.known && snap.ttl.count() > 0) {
      const auto left = snap.ttl - std::chrono::duration_cast<std::chrono::seconds>(
                                       SystemClock().Now() - snap.ttl_at);
      s.token_ttl_seconds = static_cast<double>(std::max<int64_t>(left.count(), 0));
    }
    s.renewals_success = snap.renewals;
    s.renewals_failure = snap.renewal_failures;
  }
  const auto key = p.keys->State();
  const auto health = p.v2_keys().Health();
  s.key_version = key.latest_version;
  s.key_id = health.key_id;
  s.last_success_age_seconds =
      key.since_last_ok ? static_cast<double>(key.since_last_ok->count()) / 1000.0 : -1;
  s.healthy = health.healthz == "ok";
  s.key_rollbacks = key.rollbacks_detected;
  s.key_rollback_active = key.rollback_active;
  if (p.redundant) {
    const auto r = p.redundant->State();
    s.secondary_configured = true;
    s.secondary_up = r.secondary_up;
    s.primary_up = r.primary_up;
    s.secondary_key_version = r.secondary_version;
    s.secondary_unwrapped = r.unwrapped;
    s.secondary_fallbacks = r.fallbacks;
  }
  if (p.state) {
    s.state_file_configured = true;
    s.state_file_write_failures = p.state->write_failures();
  }
  return s;
}

// The token source's own view for /readyz: "" when fine, else a one-line reason.
std::string TokenProblem(const Plugin& p, const vault::auth::LoginTokenSource* login) {
  if (login != nullptr) {
    const auto snap = login->Snapshot();
    if (snap.has_token) return "";
    if (snap.consecutive_login_failures > 0) {
      return "token invalid: Vault login failed: " + snap.last_login_error.substr(0, 200);
    }
    return "token invalid: no Vault token yet";
  }
  if (p.renewer) {
    const auto snap = p.renewer->Snapshot();
    if (snap.known && snap.ttl.count() > 0 &&
        SystemClock().Now() - snap.ttl_at >= std::chrono::duration_cast<SteadyTime::duration>(snap.ttl)) {
      return "token invalid: the token file's token has expired";
    }
  }
  return "";
}

// performance.status_thread_realtime_priority: one line saying whether the kms-status thread
// got its SCHED_FIFO priority (kms/status_loop.h); without it Status still works, and may
// wait behind the other processes on a busy node.
// Refused while started as root is a warning (the static pod's SYS_NICE missing, or a cgroup
// without a real-time budget); refused to a plugin started unprivileged (the packaged systemd
// unit, RestrictRealtime=yes) is what that deployment chose, so it is an info line.
void LogStatusThreadPriority(const kms::StatusLoop& loop, uint64_t priority, bool started_as_root) {
  if (priority == 0) {
    log::Info("status_thread", "the Status thread runs under the normal scheduler "
                               "(performance.status_thread_realtime_priority: 0)");
  } else if (loop.RealtimeResult().ok()) {
    log::Info("status_thread", "the Status thread runs under SCHED_FIFO",
              {{"priority", priority}});
  } else if (!started_as_root) {
    log::Info("status_thread",
              "the Status thread runs under the normal scheduler: started without privileges, "
              "its real-time priority could not be set",
              {{"priority", priority}, {"error", std::string(loop.RealtimeResult().message())}});
  } else {
    log::Warn("status_thread",
              "the Status thread runs under the normal scheduler: its real-time priority could "
              "not be set (set performance.status_thread_realtime_priority: 0 to silence this)",
              {{"priority", priority}, {"error", std::string(loop.RealtimeResult().message())}});
  }
}

// Starts the operations listener (probes and metrics) on `cfg.http.listen`.
absl::Status StartOps(Plugin& p, const config::Config& cfg) {
  const auto* login = dynamic_cast<const vault::auth::LoginTokenSource*>(p.tokens.get());
  metrics::SetStateProvider([&p, login] { return ReadState(p, login); });
  p.liveness = std::make_unique<observability::LivenessChecker>(
      cfg.socket.path, std::chrono::milliseconds(1000), std::chrono::milliseconds(1000));
  observability::HttpOptions opts;
  opts.listen = cfg.http.listen;
  observability::HttpHandlers h;
  h.livez = [&p] { return p.liveness->Check(); };
  h.readyz = [&p, login] {
    return observability::Readiness(p.v2_keys(), [&p, login] { return TokenProblem(p, login); });
  };
  h.metrics = [] { return metrics::Exposition(); };
  auto server = observability::HttpServer::Start(opts, std::move(h));
  if (!server.ok()) return server.status();
  p.ops = std::move(*server);
  if (!cfg.http.loopback) {
    log::Warn("http", "http.listen is not a loopback address: probes and metrics are reachable "
              "from other hosts", {{"listen", cfg.http.listen}});
  }
  log::Info("http", "operations listener started", {{"listen", cfg.http.listen}});
  return absl::OkStatus();
}

// Destroying the gRPC server can hang for good after gRPC failed to create a worker thread
// (RLIMIT_AS or a memory cgroup at its limit: "Could not create grpc_sync_server
// worker-thread"; test_faults_matrix.py, rlimit:address-space). Everything that matters is
// done when this is called (calls finished, socket removed, log flushed): exit with `code`
// if the destructors have not finished within 5 s.
void BoundTeardown(int code) {
  try {
    std::thread([code] {
      std::this_thread::sleep_for(std::chrono::seconds(5));
      std::_Exit(code);
    }).detach();
  } catch (const std::system_error&) {
    // no thread to spare: the destructors run unbounded, as before
  }
}

int Serve(const std::string& config_path, bool check_only) {
  // 1. Config: parsed and validated before anything starts; one line names any bad key.
  auto cfg = config::LoadConfigFile(config_path);
  if (!cfg.ok()) return Die(kExitUsage, std::string(cfg.status().message()));
  log::SetLevel(ToLogLevel(cfg->log_level));
#ifdef TROUSSEAU_WIPE_ON_FREE
  // Library-owned copies of plaintext (gRPC, Protobuf, libcurl, OpenSSL) are wiped when freed.
  hardening::SetWipeFreedMemory(cfg->wipe_freed_memory);
#endif

  // SIGTERM/SIGINT are taken by sigwait below; block them before any thread exists.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // libcurl's global state must be set up while the process is single-threaded.
  if (auto st = vault::CurlTransport::GlobalInit(); !st.ok()) return Die(kExitRuntime, std::string(st.message()));
  // civetweb's global state too.
  if (cfg->http.enabled) observability::InitHttpLibrary();

  // 2. Trust, identity and credentials into memory, while the files are still readable.
  Plugin p;
  auto tls = vault::TlsMaterial::Load(cfg->vault.tls);
  if (!tls.ok()) return Die(kExitUsage, std::string(tls.status().message()));
  p.tls = *tls;
  // Credentials: readable and well protected (a secret_id file open to group/others stops the
  // start). Login methods read their files again at each login, after the privilege drop.
  if (auto st = vault::auth::CheckCredentials(
          cfg->vault.auth, p.tls->has_client_identity(),
          hardening::RunningAsRoot() ? std::optional<uint32_t>(cfg->privileges.uid) : std::nullopt);
      !st.ok()) {
    return Die(kExitUsage, std::string(st.message()));
  }
  // The key rollback mark kept across restarts (state.file, docs/rollback.md): read now, as
  // root; its directory stays open, the only place files can be written after the filter.
  if (!cfg->state.file.empty()) {
    auto state = envelope::StateFile::Open(
        cfg->state.file, hardening::RunningAsRoot() ? cfg->privileges.uid : geteuid());
    if (!state.ok()) return Die(kExitUsage, std::string(state.status().message()));
    p.state = std::move(*state);
  }
  if (cfg->secondary) {
    if (auto st = LoadSecondaryTrust(p, *cfg->secondary, *cfg); !st.ok()) {
      return Die(kExitUsage, std::string(st.message()));
    }
  }
  if (check_only) {
    std::printf("config ok: %s (vault %s, transit %s/%s, %zu CA certificate(s)%s)\n",
                config_path.c_str(), cfg->vault.addresses.front().c_str(),
                cfg->vault.transit_mount.c_str(), cfg->vault.transit_key.c_str(),
                p.tls->ca_count(), p.tls->has_client_identity() ? ", client certificate" : "");
    if (cfg->secondary) {
      std::printf("secondary ok: vault %s, transit %s/%s, policy %s\n",
                  cfg->secondary->vault.addresses.front().c_str(),
                  cfg->secondary->vault.transit_mount.c_str(),
                  cfg->secondary->vault.transit_key.c_str(),
                  cfg->secondary->policy == config::SecondaryPolicy::kRequired ? "required"
                                                                               : "best_effort");
    }
    return kExitOk;
  }

  // Threads started from here on inherit an empty capability bounding set.
  if (auto st = hardening::ShedBoundingSet(); !st.ok()) return Die(kExitRuntime, std::string(st.message()));
  // Log lines (audit records included) go through a bounded queue and one writer thread from
  // here on, so a stalled stderr pipe drops and counts lines instead of blocking KMS calls. The
  // thread inherits the blocked stop signals and the empty bounding set; after the seccomp
  // filter it only needs futex, write, poll and clock_gettime.
  {
    log::WriterOptions wopts;
    wopts.max_lines = cfg->log_queue_lines;
    log::StartWriter(std::move(wopts));
  }

  auto http = vault::CurlTransport::Create(cfg->vault, p.tls);
  if (!http.ok()) return Die(kExitUsage, std::string(http.status().message()));
  p.http = std::move(*http);
  // The token source: a token file read now, or a login method whose thread (and first login)
  // starts with the first request, after the lock-down below.
  auto tokens = vault::auth::MakeTokenSource(cfg->vault, *p.http, SystemClock());
  if (!tokens.ok()) return Die(kExitUsage, std::string(tokens.status().message()));
  p.tokens = std::move(*tokens);
  p.transit = std::make_unique<vault::TransitClient>(*p.http, *p.tokens, cfg->vault.transit_mount,
                                                     cfg->vault.transit_key);
  envelope::TransitKeyServiceOptions kopts;
  kopts.namespace_ = cfg->vault.namespace_;
  kopts.refresh_period = cfg->status.refresh_period;
  kopts.stale_after = cfg->status.stale_after;
  kopts.check_timeout = cfg->vault.request_timeout;
  kopts.binding.cluster_id = cfg->binding.cluster_id;  // docs/binding.md
  kopts.binding.write = cfg->binding.write;
  kopts.binding.strict = cfg->binding.strict;
  kopts.coalesce_decrypts = cfg->performance.coalesce_decrypts;  // identical Decrypts: one call
  kopts.batch_max_items = static_cast<size_t>(cfg->performance.batch_max_items);
  kopts.batch_max_wait = cfg->performance.batch_max_wait;
  kopts.state_file = p.state.get();  // null: the rollback mark is memory only
  p.keys = std::make_unique<envelope::TransitKeyService>(*p.transit, SystemClock(), kopts);
  if (cfg->vault.auth.method == config::AuthMethod::kToken && cfg->vault.auth.renew_token) {
    // Built now (its thread starts in step 7) so that the metrics reader never sees it change.
    vault::auth::RenewerOptions ropts;
    ropts.request_timeout = cfg->vault.request_timeout;
    p.renewer = std::make_unique<vault::auth::TokenFileRenewer>(*p.tokens, *p.http, SystemClock(),
                                                                ropts);
  }
  if (cfg->secondary) {
    if (auto st = BuildSecondary(p, *cfg->secondary, kopts); !st.ok()) {
      return Die(kExitUsage, std::string(st.message()));
    }
  }
  {
    std::vector<std::string> nodes = cfg->vault.addresses;
    if (cfg->secondary) {
      nodes.insert(nodes.end(), cfg->secondary->vault.addresses.begin(),
                   cfg->secondary->vault.addresses.end());
    }
    metrics::SetVaultNodes(nodes);
  }
  metrics::SetBuildInfo(TROUSSEAU_VERSION, TROUSSEAU_GIT_REVISION,
                        metrics::ShortTlsLibraryName(common::TlsLibraryVersion()));
  // Audit records the bounded log queue had to drop (a stalled stderr): the alert's source.
  metrics::SetAuditDroppedSource([] { return log::DroppedAuditRecords(); });
  p.limits = std::make_unique<kms::CallLimits>(
      static_cast<uint32_t>(cfg->limits.max_in_flight_encrypt),
      static_cast<uint32_t>(cfg->limits.max_in_flight_decrypt));
  p.v2 = std::make_unique<kms::V2Service>(
      p.redundant ? static_cast<envelope::KeyService&>(*p.redundant) : *p.keys, p.limits.get());
  // v1beta1 has no annotations: its view of the keys never binds (docs/formats.md section 2)
  // and never has a secondary copy (docs/secondary.md).
  p.v1 = std::make_unique<kms::V1Beta1Service>(p.keys->V1Beta1View(), TROUSSEAU_VERSION,
                                               p.limits.get());

  // 3. The socket, bound as root if we are root; created 0600 through the umask, then set to
  //    the configured mode and group.
  const std::string& sock = cfg->socket.path;
  auto plan = kms::PrepareSocketPath(sock);
  if (!plan.ok()) return Die(kExitRuntime, std::string(plan.status().message()));
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + sock, grpc::InsecureServerCredentials());
  builder.RegisterService(p.v2.get());
  builder.RegisterService(p.v1.get());
  builder.SetMaxReceiveMessageSize(256 * 1024);
  builder.SetMaxSendMessageSize(256 * 1024);
  // Encrypt/Decrypt run on sync-server threads kept for reuse and bounded by the limits; a burst
  // beyond them is shed (RESOURCE_EXHAUSTED), Status and Version never need one of those threads.
  kms::ConfigureServer(builder, *p.limits,
                       static_cast<uint32_t>(cfg->performance.max_idle_threads));
  // Status and Version: async methods answered by one thread of ours (kms/status_loop.h).
  p.status_loop = std::make_unique<kms::StatusLoop>(p.v2.get(), p.v1.get());
  p.status_loop->SetRealtimePriority(
      static_cast<int>(cfg->performance.status_thread_realtime_priority));
  p.status_loop->AddTo(builder);
  const mode_t old_umask = umask(0177);
  p.server = builder.BuildAndStart();
  umask(old_umask);
  if (!p.server) return Die(kExitRuntime, "cannot listen on socket " + sock);
  if (auto st = p.status_loop->Start(*p.server); !st.ok()) {
    p.server->Shutdown();
    kms::RemoveSocket(sock);
    return Die(kExitRuntime, std::string(st.message()));
  }
  const bool root = hardening::RunningAsRoot();
  LogStatusThreadPriority(*p.status_loop, cfg->performance.status_thread_realtime_priority, root);
  std::optional<gid_t> sock_group;
  if (cfg->socket.gid) sock_group = static_cast<gid_t>(*cfg->socket.gid);
  if (auto st = kms::SecureSocket(sock, *plan, static_cast<mode_t>(cfg->socket.mode), sock_group,
                                  root ? std::optional<uid_t>(cfg->privileges.uid) : std::nullopt,
                                  root ? std::optional<gid_t>(cfg->privileges.gid) : std::nullopt);
      !st.ok()) {
    p.server->Shutdown();
    kms::RemoveSocket(sock);
    return Die(kExitRuntime, std::string(st.message()));
  }

  // 3b. The operations listener binds a port below 1024 only as root: then it starts here.
  const bool ops_early = cfg->http.enabled && cfg->http.port < 1024;
  if (ops_early) {
    if (auto st = StartOps(p, *cfg); !st.ok()) {
      p.server->Shutdown();
      kms::RemoveSocket(sock);
      return Die(kExitRuntime, std::string(st.message()));
    }
  }

  // 4. Drop privileges for good, and prove it.
  if (auto st = hardening::DropPrivileges(cfg->privileges.uid, cfg->privileges.gid); !st.ok()) {
    p.server->Shutdown();
    kms::RemoveSocket(sock);
    return Die(kExitRuntime, std::string(st.message()));
  }
  // 5. No way to gain privilege, no core files, no ptrace by our own uid.
  if (auto st = hardening::LockDown(); !st.ok()) {
    p.server->Shutdown();
    return Die(kExitRuntime, std::string(st.message()));
  }

  // 5b. The operations listener (probes, metrics): unprivileged, and before the syscall filter,
  //     so its bind, listen and worker threads are created while those calls are still allowed.
  if (cfg->http.enabled && !ops_early) {
    if (auto st = StartOps(p, *cfg); !st.ok()) {
      p.server->Shutdown();
      kms::RemoveSocket(sock);
      return Die(kExitRuntime, std::string(st.message()));
    }
  } else if (!cfg->http.enabled) {
    log::Info("http", "operations listener disabled (http.listen: off)");
  }

  const std::string process = hardening::DescribeProcess();  // reads capabilities: before seccomp
  // 6. The syscall allowlist, for every thread. Anything outside it kills the process.
  if (cfg->seccomp != config::SeccompMode::kDisabled) {
    const auto action = cfg->seccomp == config::SeccompMode::kLog ? hardening::SeccompAction::kLogTrap
                                                                   : hardening::SeccompAction::kKill;
    if (auto st = hardening::ApplySeccomp(action, p.state ? p.state->dir_fd() : -1); !st.ok()) {
      p.server->Shutdown();
      return Die(kExitRuntime, std::string(st.message()));
    }
  } else {
    log::Warn("seccomp", "seccomp.mode is disabled: no syscall filter");
  }

  // 7. Serve. Health and key_id are refreshed in the background; Status never waits on Vault.
  p.keys->Start();
  if (p.renewer) p.renewer->Start();
  if (p.secondary) {
    p.secondary->keys->Start();
    if (p.secondary->renewer) p.secondary->renewer->Start();
    log::Info("start", "secondary Vault configured",
              {{"secondary", cfg->secondary->vault.addresses},
               {"transit", cfg->secondary->vault.transit_mount + "/" + cfg->secondary->vault.transit_key},
               {"auth", p.secondary->tokens->Describe()},
               {"policy", cfg->secondary->policy == config::SecondaryPolicy::kRequired ? "required"
                                                                                        : "best_effort"}});
  }
  log::Info("start", "serving", {{"socket", sock},
                                 {"vault", cfg->vault.addresses},
                                 {"transit", cfg->vault.transit_mount + "/" + cfg->vault.transit_key},
                                 {"auth", p.tokens->Describe()},
                                 {"process", process},
                                 {"seccomp", cfg->seccomp == config::SeccompMode::kEnforce ? "enforce"
                                             : cfg->seccomp == config::SeccompMode::kLog ? "log" : "disabled"},
                                 {"state_file", p.state ? p.state->path() : "off (memory only)"},
                                 {"version", TROUSSEAU_VERSION}});
  // Wait for a stop signal, and check each second that the socket is still ours. If it was
  // deleted or replaced, kube-apiserver can no longer reach us: exit (code 1) with a clear
  // line so that kubelet restarts the plugin, which binds a fresh socket (docs/operations.md).
  const auto socket_id = kms::SocketIdentity(sock);
  int sig = 0;
  std::string socket_lost;
  for (;;) {
    const timespec tick{1, 0};
    sig = sigtimedwait(&stop_signals, nullptr, &tick);
    if (sig > 0) break;
    vault::CurlTransport::TrimAllIdleHandles();  // a burst's extra easy handles, once quiet
    kms::TrimHeapIfSlack();  // a burst's freed heap goes back to the kernel
    if (socket_id.ok()) {
      socket_lost = kms::SocketLost(sock, *socket_id);
      if (!socket_lost.empty()) break;
    }
  }
  if (!socket_lost.empty()) {
    log::Error("socket", "the KMS socket is gone; exiting so that the plugin is restarted",
               {{"socket", sock}, {"reason", socket_lost}});
  } else {
    log::Info("stop", "signal received; finishing in-flight requests", {{"signal", strsignal(sig)}});
  }
  // gRPC unlinks its Unix socket path when the server shuts down, whatever socket is there by
  // then. If another socket replaced ours (a new instance already serving there), shutting down
  // would delete it: instead let our in-flight calls finish (bounded) and leave without the
  // shutdown; the kernel closes our listener.
  const std::string at_stop =
      socket_lost.empty() && socket_id.ok() ? kms::SocketLost(sock, *socket_id) : socket_lost;
  if (at_stop == "replaced by another socket") {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((p.limits->encrypt.in_flight() > 0 || p.limits->decrypt.in_flight() > 0) &&
           std::chrono::steady_clock::now() < until) {
      const timespec pause{0, 20 * 1000 * 1000};
      nanosleep(&pause, nullptr);
    }
    log::Info("stop", "left the socket path to the socket that replaced ours; exiting without "
              "a server shutdown", {{"socket", sock}});
    // The log writer holds queued lines (the socket error among them): flush them, bounded.
    log::StopWriter(std::chrono::seconds(2));
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(socket_lost.empty() ? kExitOk : kExitRuntime);
  }
  // Probes and scrapes stop first: a probe during shutdown would only see a closing server.
  if (p.ops) p.ops->Stop();
  p.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  p.server->Wait();
  p.status_loop->Stop();
  p.keys->Stop();
  if (p.renewer) p.renewer->Stop();
  if (p.secondary) {
    p.secondary->keys->Stop();
    if (p.secondary->renewer) p.secondary->renewer->Stop();
  }
  if (!socket_lost.empty()) {
    // Whatever is at the path now is not ours: leave it.
    log::Info("stop", "stopped after losing the socket");
    log::StopWriter(std::chrono::seconds(2));
    BoundTeardown(kExitRuntime);
    return kExitRuntime;
  }
  // Removed only if still ours (a stop signal could follow a replacement within the second).
  if (!socket_id.ok() || kms::SocketLost(sock, *socket_id).empty()) kms::RemoveSocket(sock);
  log::Info("stop", "stopped cleanly");
  // Flush what is queued, bounded: a stderr nobody reads must not hold the exit.
  log::StopWriter(std::chrono::seconds(2));
  BoundTeardown(kExitOk);
  return kExitOk;
}

// main's copies of argv can hold a secret typed by mistake: a plaintext given to `trousseau
// encrypt` as an argument is refused (exit 2), but it was copied first. They are wiped when main
// returns (a short string's inline buffer too), not merely freed: wipe on free is an executable
// default that `serve` may turn off and sanitizer builds lack. No flag takes a secret by design
// (tokens, secret_ids and keys come from files; plaintexts from stdin or --input); argv itself
// (/proc/<pid>/cmdline) is the caller's and is left alone.
struct WipeArgvCopies {
  std::string& cmd;
  std::vector<std::string>& args;
  ~WipeArgvCopies() {
    Wipe(cmd);
    for (auto& a : args) Wipe(a);
  }
  static void Wipe(std::string& s) {
    s.resize(s.capacity());
    SecureWipe(s.data(), s.size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  // `serve` runs with glibc's per-thread malloc caches off; this re-execs once to set that
  // (kms/malloc_env.h, docs/performance.md change 16). Only static initialisers have run so far
  // (no thread, no file, no log line); the new image runs them again.
  if (argc > 1 && std::strcmp(argv[1], "serve") == 0) trousseau::kms::ReexecWithMallocTunables(argv);
  // Before any thread exists (docs/performance.md).
  trousseau::kms::TuneProcess();
  // main's only copies of argv: the command and its arguments (passed on by reference).
  std::string cmd = argc > 1 ? argv[1] : "";
  std::vector<std::string> args(argv + std::min(argc, 2), argv + argc);
  const WipeArgvCopies wipe_argv_copies{cmd, args};
  if (argc < 2 || cmd == "-h" || cmd == "--help" || cmd == "help") {
    PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitUsage : kExitOk;
  }
  if (cmd == "version" || cmd == "--version") return Version();
  if (cmd == "seccomp-rules") {
    for (const auto& r : hardening::SeccompAllowlist()) {
      std::printf("%-20s %s%s\n", r.syscall.c_str(), r.conditional ? "[args] " : "", r.group.c_str());
    }
    return kExitOk;
  }
  if (cmd == "doctor") return cli::doctor::Main(args);
  if (cmd == "seccomp-profile") {
    std::fputs(hardening::RuntimeProfileJson().c_str(), stdout);
    return kExitOk;
  }
  if (cmd == "status") return cli::StatusCommand(args);
  if (cmd == "encrypt") return cli::EncryptCommand(args);
  if (cmd == "decrypt") return cli::DecryptCommand(args);
  if (cmd == "audit") return cli::AuditCommand(args);
  if (cmd == "serve" || cmd == "check-config") {
    std::string config_path;
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "--config" && i + 1 < args.size()) {
        config_path = args[++i];
      } else if (args[i].rfind("--config=", 0) == 0) {
        config_path = args[i].substr(9);
      } else {
        PrintUsage(stderr);
        return Die(kExitUsage, "unknown argument: " + args[i].substr(0, 64));
      }
    }
    if (config_path.empty()) return Die(kExitUsage, cmd + " needs --config FILE");
    return Serve(config_path, cmd == "check-config");
  }
  PrintUsage(stderr);
  return Die(kExitUsage, "unknown command: " + cmd.substr(0, 64));
}
