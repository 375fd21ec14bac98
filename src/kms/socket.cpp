#include "kms/socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "observability/log.h"

namespace trousseau::kms {
namespace {

std::string Errno(int err) { return std::strerror(err); }

std::string ParentOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

// mkdir -p with mode 0750 for the directories we create; reports whether the last was created.
absl::Status MakeDirs(const std::string& dir, bool* created_last) {
  *created_last = false;
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return absl::FailedPreconditionError("socket directory " + dir + " is not a directory");
    return absl::OkStatus();
  }
  if (errno != ENOENT) return absl::FailedPreconditionError("cannot stat socket directory " + dir + ": " + Errno(errno));
  bool unused = false;
  if (dir != "/") {
    absl::Status st_parent = MakeDirs(ParentOf(dir), &unused);
    if (!st_parent.ok()) return st_parent;
  }
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError("cannot create socket directory " + dir + ": " + Errno(errno));
  }
  *created_last = true;
  return absl::OkStatus();
}

// True if something accepts connections on the socket at `path`.
bool SomeoneListens(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

absl::StatusOr<SocketPlan> PrepareSocketPath(const std::string& path) {
  SocketPlan plan;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return absl::InvalidArgumentError("socket.path is too long for a Unix socket: " + path);
  }
  absl::Status st = MakeDirs(ParentOf(path), &plan.created_directory);
  if (!st.ok()) return st;
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) != 0) {
    if (errno == ENOENT) return plan;
    return absl::FailedPreconditionError("cannot stat socket path " + path + ": " + Errno(errno));
  }
  if (!S_ISSOCK(sb.st_mode)) {
    return absl::FailedPreconditionError("socket path " + path +
                                         " exists and is not a socket; refusing to replace it");
  }
  if (SomeoneListens(path)) {
    return absl::FailedPreconditionError("socket path " + path +
                                         " is in use: another process answers on it");
  }
  if (::unlink(path.c_str()) != 0) {
    return absl::FailedPreconditionError("cannot remove stale socket " + path + ": " + Errno(errno));
  }
  log::Info("socket.stale", "replaced a stale socket left by an earlier run", {{"path", path}});
  return plan;
}

absl::Status SecureSocket(const std::string& path, const SocketPlan& plan, mode_t mode,
                          std::optional<gid_t> group, std::optional<uid_t> owner,
                          std::optional<gid_t> owner_group) {
  // The mode first, while the socket is still ours: in the static pod the plugin runs as uid 0
  // with CAP_CHOWN but without CAP_FOWNER, so once the socket belongs to 65532 uid 0 may no
  // longer chmod it (EPERM; found by tests/integration/test_kubelet.py).
  if (::chmod(path.c_str(), mode) != 0) {
    return absl::FailedPreconditionError("cannot set mode of socket " + path + ": " + Errno(errno));
  }
  if (group && ::chown(path.c_str(), static_cast<uid_t>(-1), *group) != 0) {
    return absl::FailedPreconditionError("cannot set group of socket " + path + ": " + Errno(errno));
  }
  if (owner && ::chown(path.c_str(), *owner, static_cast<gid_t>(-1)) != 0) {
    return absl::FailedPreconditionError("cannot set owner of socket " + path + ": " + Errno(errno));
  }
  if (plan.created_directory && owner) {
    const std::string dir = ParentOf(path);
    const gid_t g = group ? *group : (owner_group ? *owner_group : static_cast<gid_t>(-1));
    if (::chown(dir.c_str(), *owner, g) != 0) {
      return absl::FailedPreconditionError("cannot hand socket directory " + dir +
                                           " to the runtime user: " + Errno(errno));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<SocketId> SocketIdentity(const std::string& path) {
  struct stat sb{};
  if (::lstat(path.c_str(), &sb) != 0) {
    return absl::InternalError("cannot stat socket " + path + ": " + std::strerror(errno));
  }
  return SocketId{sb.st_dev, sb.st_ino};
}

std::string SocketLost(const std::string& path, const SocketId& id) {
  struct stat sb{};
  if (::lstat(path.c_str(), &sb) != 0) {
    return errno == ENOENT ? "deleted" : std::string("cannot stat: ") + std::strerror(errno);
  }
  if (!S_ISSOCK(sb.st_mode)) return "replaced by another file";
  if (sb.st_dev != id.dev || sb.st_ino != id.ino) return "replaced by another socket";
  return "";
}

void RemoveSocket(const std::string& path) {
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) != 0 || !S_ISSOCK(sb.st_mode)) return;
  if (::unlink(path.c_str()) != 0) {
    log::Warn("socket.remove", "could not remove the socket; the next start replaces it",
              {{"path", path}, {"error", Errno(errno)}});
  }
}

}  // namespace trousseau::kms
