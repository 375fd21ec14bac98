// The optional state file (config `state.file`, docs/rollback.md, format in docs/formats.md
// section 5): the key rollback high-water mark of every key identity, kept across restarts.
//
// Read once at start (as root, before the privilege drop); written through a directory file
// descriptor opened at start, so that after the seccomp filter the only files the process can
// create, rename or remove are in that directory (hardening/seccomp.h). Each write is an atomic
// replace: a new file created O_EXCL mode 0600 beside the old one, written, fsynced, renamed over
// it, and the directory fsynced.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "envelope/rollback.h"

namespace trousseau::envelope {

inline constexpr int kStateFormat = 1;
inline constexpr size_t kMaxStateFileBytes = 1024 * 1024;
inline constexpr size_t kMaxStateIdentityBytes = 1024;
inline constexpr size_t kMaxCreationTimeBytes = 64;

using StateMarks = std::map<std::string, KeyMark>;  // key identity "<ns/>mount/key" -> mark

// The file's text, strictly: `{"format": 1, "keys": {identity: {"high_version": N, "created":
// {"<version>": "<time>"}}}}`, no other member anywhere. The message names what is wrong.
absl::StatusOr<StateMarks> ParseState(std::string_view text);
std::string SerializeState(const StateMarks& marks);

class StateFile {
 public:
  // Opens the directory of `path` and reads the file if it exists (a missing file is a first
  // start). Refused, with a message naming the file and the problem: a directory or file not
  // owned by `owner` (the uid the plugin runs as after the privilege drop), a directory writable
  // by group or others, a file with any group or other permission bit, a symlink or non-regular
  // file, a file over kMaxStateFileBytes, or text ParseState refuses.
  static absl::StatusOr<std::unique_ptr<StateFile>> Open(const std::string& path, uid_t owner);
  ~StateFile();
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;

  const std::string& path() const { return path_; }
  // How many key identities the file holds (0 at start: no file, a first start).
  size_t size() const;
  // The directory descriptor: the seccomp filter allows creating, renaming and removing files
  // only relative to it.
  int dir_fd() const { return dir_fd_; }
  // The mark read at start for `identity`, or an empty one.
  KeyMark Find(const std::string& identity) const;
  // Replaces `identity`'s mark (others are kept as written) and writes the file atomically.
  // Thread-safe: several key services (a second Vault cluster) may share one file.
  absl::Status Write(const std::string& identity, const KeyMark& mark);
  // Writes that failed since Open (trousseau_state_file_write_failures_total, docs/metrics.md):
  // each failure leaves the file as it was, and the raised mark is kept in memory only.
  uint64_t write_failures() const { return write_failures_.load(std::memory_order_relaxed); }

 private:
  StateFile(std::string path, std::string name, int dir_fd, StateMarks marks)
      : path_(std::move(path)), name_(std::move(name)), dir_fd_(dir_fd), marks_(std::move(marks)) {}
  absl::Status WriteLocked(const std::string& identity, const KeyMark& mark);  // holds mu_

  const std::string path_;
  const std::string name_;  // the file's name inside the directory
  const int dir_fd_;
  mutable std::mutex mu_;  // serialises writes (one temporary name); guards marks_
  StateMarks marks_;
  std::atomic<uint64_t> write_failures_{0};
};

}  // namespace trousseau::envelope
