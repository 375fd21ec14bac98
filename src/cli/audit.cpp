// trousseau audit [FILE...]: reads the plugin's audit records (raw JSON lines or kubelet's CRI
// log files) and prints a review. The reading and the numbers are in audit_review.cpp.
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/audit_review.h"
#include "cli/cli.h"
#include "cli/flags.h"
#include "config/config.h"

namespace trousseau::cli {
namespace {

constexpr const char* kHelp =
    "Usage: trousseau audit [FILE...] [--since T] [--until T] [--output text|json]\n"
    "                       [--burst N] [--burst-gap D]\n"
    "\n"
    "Reads trousseau's audit records from the FILEs (or stdin when none, or for \"-\"): the\n"
    "plugin's stderr as raw JSON lines, or kubelet's container log files\n"
    "(/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log, CRI format, partial lines joined).\n"
    "Other log lines are ignored; lines that cannot be read are counted as malformed.\n"
    "\n"
    "Prints the period covered; calls by api/op with errors and p50/p99/max latency; calls by\n"
    "code, by key_id and by Vault node; error bursts; and, for key rotation, each transit key\n"
    "version still being decrypted with its last-seen time and the lowest one (raising\n"
    "min_decryption_version above it would break those reads).\n"
    "\n"
    "Flags:\n"
    "  --since T         only records at or after T: RFC 3339 (2026-12-01T20:00:00Z) or a\n"
    "                    duration back from now (90m, 24h)\n"
    "  --until T         only records before T (same forms)\n"
    "  --output FORMAT   text (default) or json\n"
    "  --burst N         an error burst has at least N errors (default 5)...\n"
    "  --burst-gap D     ...each within D of the previous one (default 1m)\n"
    "\n"
    "Exit codes: 0 review printed (even with malformed lines), 1 a FILE could not be read,\n"
    "2 usage error. docs/audit.md has the record schema and jq recipes.\n";

constexpr size_t kMaxLineBytes = 4u << 20;

absl::StatusOr<audit::Micros> ParseWhen(const std::string& flag, const std::string& text) {
  if (auto t = audit::ParseRfc3339(text)) return *t;
  auto d = config::ParseDuration(text);
  if (!d.ok()) {
    return absl::InvalidArgumentError(flag + " " + text.substr(0, 64) +
                                      ": give an RFC 3339 time (2026-12-01T20:00:00Z) or a "
                                      "duration back from now (90m, 24h)");
  }
  const auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return now - std::chrono::duration_cast<std::chrono::microseconds>(*d).count();
}

// Feeds every line of `f` to the reader; lines over kMaxLineBytes are skipped as malformed.
void ReadLines(FILE* f, const std::string& name, audit::Reader& reader) {
  std::string line;
  bool overlong = false;
  uint64_t n = 0;
  char buf[65536];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0) {
    size_t start = 0;
    for (size_t i = 0; i < got; ++i) {
      if (buf[i] != '\n') continue;
      if (!overlong) line.append(buf + start, i - start);
      ++n;
      if (overlong) {
        reader.Malformed(name, n);
      } else {
        reader.Feed(line, name, n);
      }
      line.clear();
      overlong = false;
      start = i + 1;
    }
    if (!overlong) {
      line.append(buf + start, got - start);
      if (line.size() > kMaxLineBytes) {
        overlong = true;
        line.clear();
        line.shrink_to_fit();
      }
    }
  }
  if (overlong) {
    reader.Malformed(name, ++n);
  } else if (!line.empty()) {
    reader.Feed(line, name, ++n);
  }
  reader.EndSource(name);
}

}  // namespace

int AuditCommand(const std::vector<std::string>& args) {
  const std::string cmd = "audit";
  auto flags = Flags::Parse(cmd, args,
                            {{"since", true}, {"until", true}, {"output", true}, {"burst", true},
                             {"burst-gap", true}});
  if (!flags.ok()) return UsageError(cmd, std::string(flags.status().message()));
  if (flags->help()) {
    std::fputs(kHelp, stdout);
    return kExitOk;
  }
  const std::string output = flags->get("output", "text");
  if (output != "text" && output != "json") return UsageError(cmd, "--output must be text or json");
  std::optional<audit::Micros> since, until;
  if (flags->has("since")) {
    auto t = ParseWhen("--since", flags->get("since"));
    if (!t.ok()) return UsageError(cmd, std::string(t.status().message()));
    since = *t;
  }
  if (flags->has("until")) {
    auto t = ParseWhen("--until", flags->get("until"));
    if (!t.ok()) return UsageError(cmd, std::string(t.status().message()));
    until = *t;
  }
  if (since && until && *since >= *until) return UsageError(cmd, "--since must be before --until");
  audit::ReviewOptions opts;
  if (flags->has("burst")) {
    const std::string b = flags->get("burst");
    char* end = nullptr;
    errno = 0;
    const unsigned long long n = std::strtoull(b.c_str(), &end, 10);
    if (b.empty() || *end != '\0' || errno != 0 || n < 1 || n > 1000000 || b[0] == '-') {
      return UsageError(cmd, "--burst must be a whole number from 1 to 1000000");
    }
    opts.burst_min_errors = n;
  }
  if (flags->has("burst-gap")) {
    auto d = config::ParseDuration(flags->get("burst-gap"));
    if (!d.ok() || d->count() <= 0) {
      return UsageError(cmd, "--burst-gap must be a duration such as 30s or 2m");
    }
    opts.burst_gap_us = std::chrono::duration_cast<std::chrono::microseconds>(*d).count();
  }

  audit::Reader reader(since, until);
  std::vector<std::string> files = flags->positional();
  if (files.empty()) {
    if (::isatty(STDIN_FILENO)) {
      return UsageError(cmd, "give log FILEs, or pipe the records in (kubectl logs POD | trousseau audit)");
    }
    files.push_back("-");
  }
  for (const auto& name : files) {
    if (name == "-") {
      ReadLines(stdin, "-", reader);
      continue;
    }
    FILE* f = std::fopen(name.c_str(), "rb");
    if (f == nullptr) {
      std::fprintf(stderr, "trousseau audit: cannot read %s: %s\n", name.c_str(), std::strerror(errno));
      return kExitFailed;
    }
    ReadLines(f, name, reader);
    const bool failed = std::ferror(f) != 0;
    std::fclose(f);
    if (failed) {
      std::fprintf(stderr, "trousseau audit: error reading %s\n", name.c_str());
      return kExitFailed;
    }
  }
  const audit::Review review = audit::BuildReview(std::move(reader.mutable_records()), reader.stats(), opts);
  if (output == "json") {
    std::printf("%s\n", audit::RenderJson(review, opts)
                            .dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                            .c_str());
  } else {
    std::fputs(audit::RenderText(review, opts).c_str(), stdout);
  }
  return kExitOk;
}

}  // namespace trousseau::cli
