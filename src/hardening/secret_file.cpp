#include "hardening/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace trousseau {
namespace {

absl::Status ErrnoError(const std::string& what, const std::string& path, int err) {
  std::string msg = what + " " + path + ": " + std::strerror(err);
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::FailedPreconditionError(msg);
}

FileIdentity IdentityOf(const struct stat& st) {
  FileIdentity id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = st.st_size;
  id.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  id.ctime_ns = static_cast<long long>(st.st_ctim.tv_sec) * 1000000000LL + st.st_ctim.tv_nsec;
  return id;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<FileIdentity> StatFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoError("cannot stat", path, errno);
  return IdentityOf(st);
}

absl::StatusOr<SecretBuffer> ReadSecretFile(const std::string& path, size_t max_bytes,
                                            FileIdentity* identity) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the S_ISREG check below refuses it.
  // (It has no effect on reads from regular files.)
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) return ErrnoError("cannot open", path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError("not a regular file: " + path);
  }
  if (st.st_size < 0 || static_cast<size_t>(st.st_size) > max_bytes) {
    return absl::FailedPreconditionError("file too large (over " + std::to_string(max_bytes) +
                                         " bytes): " + path);
  }
  SecretBuffer buf(max_bytes + 1);
  for (;;) {
    if (buf.size() > max_bytes) {
      return absl::FailedPreconditionError("file too large (over " +
                                           std::to_string(max_bytes) + " bytes): " + path);
    }
    const size_t room = buf.capacity() - buf.size();
    const size_t old = buf.size();
    buf.resize(buf.capacity());
    ssize_t n = ::read(fd.get(), buf.data() + old, room);
    if (n < 0) {
      buf.resize(old);
      if (errno == EINTR) continue;
      return ErrnoError("cannot read", path, errno);
    }
    buf.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
  }
  if (identity != nullptr) *identity = IdentityOf(st);
  return buf;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path, size_t max_bytes) {
  auto buf = ReadSecretFile(path, max_bytes);
  if (!buf.ok()) return buf.status();
  return std::string(buf->view());
}

void TrimSecret(SecretBuffer& buffer) {
  auto is_space = [](uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  size_t begin = 0;
  size_t end = buffer.size();
  while (begin < end && is_space(buffer.data()[begin])) ++begin;
  while (end > begin && is_space(buffer.data()[end - 1])) --end;
  if (begin > 0) std::memmove(buffer.data(), buffer.data() + begin, end - begin);
  buffer.resize(end - begin);
}

}  // namespace trousseau
