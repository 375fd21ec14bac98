// Status helpers. We use absl::Status (already linked through gRPC); its codes are numerically
// the gRPC codes, so the adapters in src/kms pass them through unchanged.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TROUSSEAU_CONCAT_INNER(a, b) a##b
#define TROUSSEAU_CONCAT(a, b) TROUSSEAU_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                 \
  do {                                        \
    ::absl::Status _st = (expr);              \
    if (!_st.ok()) return _st;                \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(TROUSSEAU_CONCAT(_statusor_, __LINE__), lhs, expr)
