// Cluster binding (docs/formats.md section 3, docs/binding.md): each wrapped seed is bound to a
// configured cluster identity plus the Transit key through Transit's `associated_data`, and the
// KMS v2 annotation `aad.trousseau.io` records the binding version so Decrypt knows which AAD
// to rebuild. Pure functions: no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace trousseau::envelope {

inline constexpr std::string_view kBindingAnnotation = "aad.trousseau.io";
inline constexpr int kBindingVersion = 1;
inline constexpr size_t kMaxClusterIdBytes = 128;

struct BindingOptions {
  std::string cluster_id;  // empty: binding off (bound seeds cannot be read: FAILED_PRECONDITION)
  bool write = true;       // false: read bound seeds, write unbound ones (rolling back)
  bool strict = false;     // refuse unbound seeds (and v1beta1, which cannot be bound)
  bool Writes() const { return !cluster_id.empty() && write; }
};

// 1..128 characters from [A-Za-z0-9._:-]; the message names what is wrong.
absl::Status ValidateClusterId(std::string_view id);

// AAD v1: "trousseau-binding-v1" NUL cluster_id NUL identity ("<ns/>mount/key").
std::string BindingAadV1(std::string_view cluster_id, std::string_view identity);

// The annotation value written with a v1-bound seed: "1;cluster=<cluster_id>".
std::string BindingAnnotationV1(std::string_view cluster_id);

struct ParsedBinding {
  int version = 0;            // 1
  std::string writer_cluster; // from "cluster=", for messages only ("" if absent)
};
// Parses an annotation value; INVALID_ARGUMENT naming the annotation for anything but a known
// version (a newer Trousseau's, or garbage).
absl::StatusOr<ParsedBinding> ParseBindingAnnotation(std::string_view value);

// Transit key types whose encrypt authenticates associated_data (docs/formats.md, observed).
bool KeyTypeSupportsAad(std::string_view type);

}  // namespace trousseau::envelope
