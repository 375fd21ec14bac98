#include "vault/secret_json.h"

namespace trousseau::vault {

SecretBuffer DumpSecret(const SecretJson& j) {
  WipingString text = j.dump();
  SecretBuffer out = SecretBuffer::CopyOf(std::string_view(text.data(), text.size()));
  return out;  // `text` is wiped by its allocator here
}

absl::StatusOr<SecretJson> ParseSecret(const SecretBuffer& text) {
  const auto* begin = text.data();
  const auto* end = begin + text.size();
  SecretJson j = SecretJson::parse(begin, end, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("response is not valid JSON");
  return j;
}

std::string VaultErrors(const SecretBuffer& body) {
  auto j = ParseSecret(body);
  if (!j.ok() || !j->is_object()) return "";
  auto it = j->find("errors");
  if (it == j->end() || !it->is_array()) return "";
  std::string out;
  for (const auto& e : *it) {
    if (!e.is_string()) continue;
    if (!out.empty()) out += "; ";
    for (char c : e.get_ref<const WipingString&>()) {
      out.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
      if (out.size() >= 300) break;
    }
    if (out.size() >= 300) {
      out += "...";
      break;
    }
  }
  return out;
}

}  // namespace trousseau::vault
