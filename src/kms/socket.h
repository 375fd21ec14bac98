// The Unix socket kube-apiserver dials: its path is prepared before gRPC binds it, and its
// permissions are set right after.
#pragma once

#include <optional>
#include <string>
#include <sys/types.h>

#include "absl/status/statusor.h"

namespace trousseau::kms {

struct SocketPlan {
  bool created_directory = false;  // we made the parent, so we may hand it to the runtime user
};

// Creates the parent directory if missing (mode 0750). Replaces a stale socket (a socket file
// nobody answers on). Refuses a live socket or any other kind of file at the path.
absl::StatusOr<SocketPlan> PrepareSocketPath(const std::string& path);

// Sets the socket's mode and group; if we created the directory and will drop to `owner`,
// hands the directory to `owner` so the socket can be removed at shutdown.
absl::Status SecureSocket(const std::string& path, const SocketPlan& plan, mode_t mode,
                          std::optional<gid_t> group, std::optional<uid_t> owner,
                          std::optional<gid_t> owner_group);

// What identifies the socket file we bound: its device and inode.
struct SocketId {
  dev_t dev = 0;
  ino_t ino = 0;
};
absl::StatusOr<SocketId> SocketIdentity(const std::string& path);

// "" while `path` is still the socket `id`; else why not ("deleted", "replaced by another
// file", "replaced by another socket").
std::string SocketLost(const std::string& path, const SocketId& id);

// Removes the socket file if it is still ours (a socket). Logs, never fails the shutdown.
void RemoveSocket(const std::string& path);

}  // namespace trousseau::kms
