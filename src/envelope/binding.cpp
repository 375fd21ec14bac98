#include "envelope/binding.h"

namespace trousseau::envelope {
namespace {

bool ClusterIdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f && c != '"') ? c : '?';
  return out;
}

}  // namespace

absl::Status ValidateClusterId(std::string_view id) {
  if (id.empty()) return absl::InvalidArgumentError("cluster id is empty");
  if (id.size() > kMaxClusterIdBytes) {
    return absl::InvalidArgumentError("cluster id is " + std::to_string(id.size()) +
                                      " characters; the limit is " +
                                      std::to_string(kMaxClusterIdBytes));
  }
  for (char c : id) {
    if (!ClusterIdChar(c)) {
      return absl::InvalidArgumentError("cluster id \"" + Printable(id) +
                                        "\" has a character outside [A-Za-z0-9._:-]");
    }
  }
  return absl::OkStatus();
}

std::string BindingAadV1(std::string_view cluster_id, std::string_view identity) {
  std::string aad = "trousseau-binding-v1";
  aad.push_back('\0');
  aad.append(cluster_id);
  aad.push_back('\0');
  aad.append(identity);
  return aad;
}

std::string BindingAnnotationV1(std::string_view cluster_id) {
  return "1;cluster=" + std::string(cluster_id);
}

absl::StatusOr<ParsedBinding> ParseBindingAnnotation(std::string_view value) {
  const std::string where = "annotation " + std::string(kBindingAnnotation) + ": ";
  const size_t semi = value.find(';');
  const std::string_view version = value.substr(0, semi);
  if (version.empty() || version.size() > 9 ||
      version.find_first_not_of("0123456789") != std::string_view::npos) {
    return absl::InvalidArgumentError(where + "malformed value \"" + Printable(value) +
                                      "\" (expected \"<binding version>;cluster=<id>\")");
  }
  if (version != "1") {
    return absl::InvalidArgumentError(
        where + "binding version " + std::string(version) +
        " is unknown to this Trousseau (it reads version 1); was it written by a newer release?");
  }
  ParsedBinding out;
  out.version = 1;
  if (semi != std::string_view::npos) {
    std::string_view rest = value.substr(semi + 1);
    constexpr std::string_view kCluster = "cluster=";
    if (rest.substr(0, kCluster.size()) == kCluster && ValidateClusterId(rest.substr(kCluster.size())).ok()) {
      out.writer_cluster = std::string(rest.substr(kCluster.size()));
    }
  }
  return out;
}

bool KeyTypeSupportsAad(std::string_view type) {
  return type == "aes256-gcm96" || type == "aes128-gcm96" || type == "chacha20-poly1305" ||
         type == "xchacha20-poly1305";
}

}  // namespace trousseau::envelope
