// TransitKeyService over a real TransitClient talking to a FakeHttpTransport, timed by a
// FakeClock: the fixture the envelope unit tests share (transit_key_service_test,
// binding_test), with the Transit paths of key "kubernetes" on mount "transit" and answers
// shaped like Vault's.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "common/base64.h"
#include "envelope/key_service.h"
#include "fakes/fake_clock.h"
#include "fakes/fake_http_transport.h"
#include "fakes/fake_token_source.h"
#include "vault/transit_client.h"

namespace trousseau::fakes {

inline const std::string kKeys = "/v1/transit/keys/kubernetes";
inline const std::string kEncrypt = "/v1/transit/encrypt/kubernetes";
inline const std::string kDecrypt = "/v1/transit/decrypt/kubernetes";

// A well-formed Transit ciphertext of key version `version`.
inline std::string Ct(int version) {
  return "vault:v" + std::to_string(version) + ":" + base64::Encode(std::string(60, 'c'));
}
// Vault's answer to transit/encrypt: Ct(version).
inline std::string EncryptBody(int version) {
  return nlohmann::json{{"data", {{"ciphertext", Ct(version)}}}}.dump();
}

struct TransitKeyServiceFixture {
  explicit TransitKeyServiceFixture(envelope::TransitKeyServiceOptions o)
      : keys(transit, clock, std::move(o)) {}
  FakeHttpTransport http;
  FakeTokenSource tokens;
  FakeClock clock;
  vault::TransitClient transit{http, tokens, "transit", "kubernetes"};
  envelope::TransitKeyService keys;
  Deadline Soon() const { return clock.Now() + std::chrono::seconds(5); }
};

}  // namespace trousseau::fakes
