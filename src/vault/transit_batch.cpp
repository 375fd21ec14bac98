// Transit batch_input calls: many encrypts (or decrypts) in one HTTP request.
//
// What OpenBao 2.7 does (checked against the real server; Vault documents the same):
// - results come back in input order, each echoing the item's "reference"; we send the index
//   and refuse an answer whose references do not match (a plaintext must never reach the wrong
//   caller);
// - a batch where any item failed answers HTTP 400 with data.batch_results, the failed items
//   carrying "error" and the others their result; all good answers 200;
// - a top-level key_version is ignored when batch_input is given: it must be set per item;
// - a 400 without batch_results refuses the request as a whole (e.g. "refused JSON input due
//   to high complexity" past the listener's max_request_json_strings, 1000 by default);
// - 403 and 5xx concern the whole call.
// Bodies and answers hold plaintexts: built and parsed with SecretJson (wiping allocator) into
// SecretBuffers, as in transit_client.cpp.
#include "common/base64.h"
#include "common/status.h"
#include "vault/ciphertext.h"
#include "vault/secret_json.h"
#include "vault/transit_client.h"

namespace trousseau::vault {
namespace {

// Raw bytes to base64 in a string that is wiped when freed.
WipingString Base64Of(std::string_view raw) {
  WipingString out(base64::EncodedLength(raw.size()) + 1, '\0');
  base64::EncodeInto(reinterpret_cast<const uint8_t*>(raw.data()), raw.size(), out.data());
  out.resize(out.size() - 1);
  return out;
}

// A Vault item error for a message: printable ASCII, capped (as VaultErrors does).
std::string Sanitized(const WipingString& s) {
  std::string out;
  for (char c : s) {
    out.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
    if (out.size() >= 300) {
      out += "...";
      break;
    }
  }
  return out;
}

absl::Status ItemError(std::string_view op, const std::string& where, const std::string& said) {
  const std::string vs = " (vault said: " + said + ")";
  if (op == "decrypt") {
    if (said.find("min_decryption_version") != std::string::npos ||
        said.find("too old") != std::string::npos ||
        said.find("disallowed by policy") != std::string::npos) {
      return absl::FailedPreconditionError(
          where + "the ciphertext's key version is below the key's min_decryption_version; "
                  "lower min_decryption_version in Vault to read it, or restore from backup" +
          vs);
    }
    return absl::InvalidArgumentError(where + "Vault rejected the ciphertext" + vs);
  }
  return absl::InvalidArgumentError(where + "Vault rejected the request" + vs);
}

// The per-item error text, or "" when the item succeeded.
std::string ErrorOf(const SecretJson& r) {
  if (!r.contains("error")) return "";
  const SecretJson& e = r.at("error");
  if (!e.is_string() || e.get_ref<const WipingString&>().empty()) return "";
  return Sanitized(e.get_ref<const WipingString&>());
}

// The string field `name` of a batch result, or null.
const WipingString* StringField(const SecretJson& r, const char* name) {
  if (!r.contains(name)) return nullptr;
  const SecretJson& v = r.at(name);
  return v.is_string() ? &v.get_ref<const WipingString&>() : nullptr;
}

// The batch_results array of an answer, checked against the item count and references.
// Returns nullopt-like error status for the whole call when the answer cannot be trusted.
absl::StatusOr<SecretJson> BatchResults(const SecretBuffer& body, size_t n, const std::string& where,
                                        std::string* request_id) {
  auto j = ParseSecret(body);
  if (!j.ok() || !j->is_object()) return absl::InternalError(where + "malformed response: not a JSON object");
  if (const WipingString* rid = StringField(*j, "request_id"); rid != nullptr) {
    const WipingString& s = *rid;
    bool ok = !s.empty() && s.size() <= kMaxRequestIdBytes;
    for (char c : s) {
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c == '.' || c == ':');
    }
    if (ok) request_id->assign(s.data(), s.size());
  }
  if (!j->contains("data") || !(*j)["data"].is_object()) {
    return absl::InternalError(where + "malformed response: no data object");
  }
  SecretJson& data = (*j)["data"];
  if (!data.contains("batch_results") || !data["batch_results"].is_array()) {
    return absl::InternalError(where + "malformed response: no data.batch_results list");
  }
  SecretJson* results = &data["batch_results"];
  if (results->size() != n) {
    return absl::InternalError(where + "malformed response: " + std::to_string(results->size()) +
                               " batch results for " + std::to_string(n) + " items");
  }
  for (size_t i = 0; i < n; ++i) {
    const auto& r = (*results)[i];
    if (!r.is_object()) return absl::InternalError(where + "malformed response: a batch result is not an object");
    // An answer without references (older servers) is taken in order; one with references
    // must name each item's own index.
    const WipingString* ref = StringField(r, "reference");
    if (ref != nullptr && !ref->empty()) {
      const WipingString& s = *ref;
      if (std::string_view(s.data(), s.size()) != std::to_string(i)) {
        return absl::InternalError(where + "Vault answered the batch out of order (reference " +
                                   Sanitized(s) + " at position " + std::to_string(i) + ")");
      }
    }
  }
  return std::move(*results);
}

}  // namespace

// The skeleton both batch calls share: one batch_input item per element of `items` (its fields
// set by `fill(item, obj)`, the reference added here), posted to transit/<op>; whole-call
// failures mapped; the answer checked (count, references); then per item either Vault's own
// error mapped to a code, or `read(result, where)` stamped with the node and request_id.
template <typename Out, typename Item, typename Fill, typename Read>
absl::StatusOr<std::vector<absl::StatusOr<Out>>> TransitClient::PostBatch(
    std::string_view op, const std::vector<Item>& items, Fill fill, Read read, Deadline deadline) {
  if (items.empty()) return std::vector<absl::StatusOr<Out>>{};
  SecretBuffer body;
  {
    SecretJson req = SecretJson::object();
    SecretJson list = SecretJson::array();
    for (size_t i = 0; i < items.size(); ++i) {
      SecretJson item = SecretJson::object();
      fill(items[i], item);
      item["reference"] = WipingString(std::to_string(i).c_str());
      list.push_back(std::move(item));
    }
    req["batch_input"] = std::move(list);
    body = DumpSecret(req);
  }
  const std::string path = "/v1/" + mount_ + "/" + std::string(op) + "/" + key_;
  ASSIGN_OR_RETURN(HttpResponse resp, Call(HttpRequest::Method::kPost, path, &body, deadline));
  body.clear();
  const std::string where =
      "vault " + resp.node + ": transit " + std::string(op) + " on " + mount_ + "/" + key_ + ": ";
  if (resp.status != 200 && resp.status != 400) return MapHttpError(resp, op);
  std::string request_id;
  auto results = BatchResults(resp.body, items.size(), where, &request_id);
  if (!results.ok()) {
    // A 400 that refused the whole batch: report Vault's own words.
    if (resp.status == 400) return MapHttpError(resp, op);
    return results.status();
  }
  resp.body.clear();
  std::vector<absl::StatusOr<Out>> out;
  out.reserve(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const SecretJson& r = (*results)[i];
    if (std::string err = ErrorOf(r); !err.empty()) {
      out.emplace_back(ItemError(op, where, err));
      continue;
    }
    absl::StatusOr<Out> one = read(r, where);
    if (one.ok()) {
      one->node = resp.node;
      one->request_id = request_id;
    }
    out.push_back(std::move(one));
  }
  return out;
}

absl::StatusOr<std::vector<absl::StatusOr<Wrapped>>> TransitClient::EncryptBatch(
    const std::vector<EncryptItem>& items, Deadline deadline) {
  auto fill = [](const EncryptItem& in, SecretJson& item) {
    item["plaintext"] = Base64Of(in.plaintext);
    if (in.key_version > 0) item["key_version"] = in.key_version;
    if (!in.associated_data.empty()) item["associated_data"] = Base64Of(in.associated_data);
  };
  auto read = [](const SecretJson& r, const std::string& where) -> absl::StatusOr<Wrapped> {
    const WipingString* ctp = StringField(r, "ciphertext");
    if (ctp == nullptr) {
      return absl::InternalError(where + "malformed response: a batch result has no ciphertext");
    }
    Wrapped w;
    w.ciphertext.assign(ctp->data(), ctp->size());
    auto version = ParseCiphertextVersion(w.ciphertext, kMaxV1CiphertextBytes);
    if (!version.ok()) {
      return absl::InternalError(where + "Vault returned an unusable ciphertext: " +
                                 std::string(version.status().message()));
    }
    w.version = *version;
    return w;
  };
  return PostBatch<Wrapped>("encrypt", items, fill, read, deadline);
}

absl::StatusOr<std::vector<absl::StatusOr<Unwrapped>>> TransitClient::DecryptBatch(
    const std::vector<DecryptItem>& items, Deadline deadline) {
  auto fill = [](const DecryptItem& in, SecretJson& item) {
    item["ciphertext"] = WipingString(in.ciphertext.data(), in.ciphertext.size());
    if (!in.associated_data.empty()) item["associated_data"] = Base64Of(in.associated_data);
  };
  auto read = [](const SecretJson& r, const std::string& where) -> absl::StatusOr<Unwrapped> {
    const WipingString* b64p = StringField(r, "plaintext");
    if (b64p == nullptr) {
      return absl::InternalError(where + "malformed response: a batch result has no plaintext");
    }
    const WipingString& b64 = *b64p;
    Unwrapped u;
    u.plaintext.resize(base64::MaxDecodedLength(b64.size()));
    auto n = base64::DecodeInto(std::string_view(b64.data(), b64.size()), u.plaintext.data());
    if (!n.ok()) {
      return absl::InternalError(where + "malformed response: a batch plaintext is not base64");
    }
    u.plaintext.resize(*n);
    return u;
  };
  return PostBatch<Unwrapped>("decrypt", items, fill, read, deadline);
}

}  // namespace trousseau::vault
