// TempDir: a fresh directory under $TMPDIR (or /tmp), removed with its contents at scope exit.
// Paths stay short so that Unix socket paths under it fit in sun_path.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace trousseau::fakes {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base && std::string_view(base).size() < 40 ? base : "/tmp") +
                       "/trousseau-ut-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Path(std::string_view name) const { return path_ + "/" + std::string(name); }

  // Writes `content` to name (truncating), returns the full path.
  std::string Write(std::string_view name, std::string_view content) const {
    const std::string p = Path(name);
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write " + p);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    return p;
  }

  // Writes to a temporary name, then renames over `name` (how Vault Agent replaces a token).
  std::string WriteByRename(std::string_view name, std::string_view content) const {
    const std::string tmp = Write(std::string(name) + ".tmp", content);
    const std::string p = Path(name);
    std::filesystem::rename(tmp, p);
    return p;
  }

 private:
  std::string path_;
};

}  // namespace trousseau::fakes
