#include "envelope/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

namespace trousseau::envelope {
namespace {

using nlohmann::json;

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

std::string Errno(int e) { return std::strerror(e); }

std::string Octal(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// A positive int64 from a JSON number; nothing else (no floats, strings or booleans).
bool PositiveInt(const json& v, int64_t& out) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<uint64_t>();
    if (u == 0 || u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
    return out > 0;
  }
  return false;
}

// "1".."9223372036854775807", canonical decimal.
bool VersionKey(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 19 || s[0] == '0') return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  out = static_cast<int64_t>(v);
  return true;
}

bool Printable(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// A name taken from the file, for a message: printable (a damaged file must not put control
// bytes into the log line) and bounded.
std::string Shown(std::string_view s, size_t limit = 64) {
  std::string out;
  for (unsigned char c : s.substr(0, limit)) out.push_back(c >= 0x20 && c <= 0x7e ? static_cast<char>(c) : '?');
  if (s.size() > limit) out += "...";
  return out;
}

absl::Status ParseMark(const std::string& id, const json& m, KeyMark& out) {
  const std::string where = "keys[\"" + Shown(id) + "\"]";
  if (!m.is_object()) return Bad(where + " is not an object");
  for (const auto& [k, v] : m.items()) {
    if (k != "high_version" && k != "created") return Bad(where + " has an unknown member \"" + Shown(k) + "\"");
  }
  if (!m.contains("high_version") || !PositiveInt(m["high_version"], out.high_version)) {
    return Bad(where + ".high_version must be a whole number from 1 to 2^63-1");
  }
  if (!m.contains("created") || !m["created"].is_object()) {
    return Bad(where + ".created must be an object (version -> creation time)");
  }
  for (const auto& [k, v] : m["created"].items()) {
    int64_t version = 0;
    if (!VersionKey(k, version)) {
      return Bad(where + ".created has a key that is not a version number: \"" + Shown(k, 32) + "\"");
    }
    if (version > out.high_version) {
      return Bad(where + ".created has version " + k + ", above high_version " +
                 std::to_string(out.high_version));
    }
    if (!v.is_string() || v.get_ref<const std::string&>().empty() ||
        v.get_ref<const std::string&>().size() > kMaxCreationTimeBytes ||
        !Printable(v.get_ref<const std::string&>())) {
      return Bad(where + ".created[\"" + k + "\"] must be a creation time string of 1 to " +
                 std::to_string(kMaxCreationTimeBytes) + " printable characters");
    }
    out.created.emplace(version, v.get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StateMarks> ParseState(std::string_view text) {
  if (text.size() > kMaxStateFileBytes) {
    return Bad("is " + std::to_string(text.size()) + " bytes; the limit is " +
               std::to_string(kMaxStateFileBytes));
  }
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad("is not valid JSON (truncated or damaged?)");
  if (!doc.is_object()) return Bad("is not a JSON object");
  for (const auto& [k, v] : doc.items()) {
    if (k != "format" && k != "keys") return Bad("has an unknown member \"" + Shown(k) + "\"");
  }
  if (!doc.contains("format")) return Bad("has no \"format\" member");
  int64_t format = 0;
  if (!PositiveInt(doc["format"], format) || format != kStateFormat) {
    return Bad("has format " + Shown(doc["format"].dump(), 32) + "; this release reads format " +
               std::to_string(kStateFormat) + " only (written by a newer Trousseau?)");
  }
  if (!doc.contains("keys") || !doc["keys"].is_object()) return Bad("has no \"keys\" object");
  StateMarks marks;
  for (const auto& [id, m] : doc["keys"].items()) {
    if (id.empty() || id.size() > kMaxStateIdentityBytes || !Printable(id)) {
      return Bad("has a key identity that is empty, longer than " +
                 std::to_string(kMaxStateIdentityBytes) + " bytes or not printable");
    }
    KeyMark mark;
    if (absl::Status st = ParseMark(id, m, mark); !st.ok()) return st;
    marks.emplace(id, std::move(mark));
  }
  return marks;
}

std::string SerializeState(const StateMarks& marks) {
  json keys = json::object();
  for (const auto& [id, m] : marks) {
    json created = json::object();
    for (const auto& [v, t] : m.created) created[std::to_string(v)] = t;
    keys[id] = {{"high_version", m.high_version}, {"created", std::move(created)}};
  }
  json doc = {{"format", kStateFormat}, {"keys", std::move(keys)}};
  return doc.dump(2) + "\n";
}

absl::StatusOr<std::unique_ptr<StateFile>> StateFile::Open(const std::string& path, uid_t owner) {
  const auto fail = [&](const std::string& what) {
    return absl::FailedPreconditionError("state.file " + path + ": " + what);
  };
  const size_t slash = path.rfind('/');
  if (path.empty() || path[0] != '/' || slash == std::string::npos || slash + 1 == path.size()) {
    return fail("must be an absolute path to a file");
  }
  const std::string dir = slash == 0 ? "/" : path.substr(0, slash);
  const std::string name = path.substr(slash + 1);
  if (name == "." || name == "..") return fail("must name a file");
  const std::string fix = " (create it with: install -d -o " + std::to_string(owner) + " -m 0700 " + dir + ")";

  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return fail("cannot open its directory " + dir + ": " + Errno(errno) + fix);
  const auto close_fail = [&](const std::string& what) {
    close(dfd);
    return fail(what);
  };
  struct stat ds {};
  if (fstat(dfd, &ds) != 0) return close_fail("cannot stat its directory: " + Errno(errno));
  if (ds.st_uid != owner) {
    return close_fail("its directory " + dir + " is owned by uid " + std::to_string(ds.st_uid) +
                      "; it must belong to uid " + std::to_string(owner) +
                      ", the user the plugin runs as" + fix);
  }
  if ((ds.st_mode & (S_IWUSR | S_IXUSR)) != (S_IWUSR | S_IXUSR)) {
    return close_fail("its directory " + dir + " has mode " + Octal(ds.st_mode) +
                      ": its owner cannot create files in it" + fix);
  }
  if ((ds.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return close_fail("its directory " + dir + " has mode " + Octal(ds.st_mode) +
                      ": writable by group or others, who could replace the file" + fix);
  }

  StateMarks marks;
  const int fd = openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) {
    const int e = errno;
    return close_fail(e == ELOOP ? "is a symbolic link; refused" : "cannot open: " + Errno(e));
  }
  if (fd >= 0) {
    std::string text;
    struct stat fs {};
    absl::Status st = absl::OkStatus();
    if (fstat(fd, &fs) != 0) {
      st = fail("cannot stat: " + Errno(errno));
    } else if (!S_ISREG(fs.st_mode)) {
      st = fail("is not a regular file");
    } else if (fs.st_uid != owner) {
      st = fail("is owned by uid " + std::to_string(fs.st_uid) + "; it must belong to uid " +
                std::to_string(owner) + ", the user the plugin runs as");
    } else if ((fs.st_mode & 077) != 0) {
      st = fail("has mode " + Octal(fs.st_mode) + "; it must be 0600 (no group or other access)");
    } else if (static_cast<uint64_t>(fs.st_size) > kMaxStateFileBytes) {
      st = fail("is " + std::to_string(fs.st_size) + " bytes; the limit is " +
                std::to_string(kMaxStateFileBytes));
    } else {
      char buf[8192];
      for (;;) {
        const ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          st = fail("cannot read: " + Errno(errno));
          break;
        }
        if (n == 0) break;
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > kMaxStateFileBytes) break;  // grew while read: ParseState names it
      }
    }
    close(fd);
    if (st.ok()) {
      auto parsed = ParseState(text);
      if (!parsed.ok()) {
        st = fail(std::string(parsed.status().message()) +
                  "; the plugin will not start without a mark it can trust (docs/rollback.md, "
                  "\"The state file\")");
      } else {
        marks = std::move(*parsed);
      }
    }
    if (!st.ok()) {
      close(dfd);
      return st;
    }
  }
  return std::unique_ptr<StateFile>(new StateFile(path, name, dfd, std::move(marks)));
}

StateFile::~StateFile() { close(dir_fd_); }

size_t StateFile::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return marks_.size();
}

KeyMark StateFile::Find(const std::string& identity) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = marks_.find(identity);
  return it == marks_.end() ? KeyMark{} : it->second;
}

absl::Status StateFile::Write(const std::string& identity, const KeyMark& mark) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status st = WriteLocked(identity, mark);
  if (!st.ok()) write_failures_.fetch_add(1, std::memory_order_relaxed);
  return st;
}

absl::Status StateFile::WriteLocked(const std::string& identity, const KeyMark& mark) {
  StateMarks next = marks_;
  next[identity] = mark;
  const std::string text = SerializeState(next);
  const std::string tmp = "." + name_ + ".tmp";
  const auto fail = [&](const std::string& what, int e) {
    unlinkat(dir_fd_, tmp.c_str(), 0);
    return absl::UnavailableError("state.file " + path_ + ": " + what + ": " + Errno(e));
  };
  int fd = openat(dir_fd_, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    // Left by a write that did not finish (a crash between create and rename): ours to remove.
    unlinkat(dir_fd_, tmp.c_str(), 0);
    fd = openat(dir_fd_, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  }
  if (fd < 0) {
    const int e = errno;
    return absl::UnavailableError("state.file " + path_ + ": cannot create " + tmp + ": " + Errno(e));
  }
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      close(fd);
      return fail("writing", e);
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    const int e = errno;
    close(fd);
    return fail("fsync", e);
  }
  if (close(fd) != 0) return fail("close", errno);
  if (renameat(dir_fd_, tmp.c_str(), dir_fd_, name_.c_str()) != 0) return fail("rename", errno);
  // The rename itself is durable only once the directory is.
  if (fsync(dir_fd_) != 0) {
    return absl::UnavailableError("state.file " + path_ + ": fsync of the directory: " + Errno(errno));
  }
  marks_ = std::move(next);
  return absl::OkStatus();
}

}  // namespace trousseau::envelope
