// ParseCiphertextVersion: the check every ciphertext passes before it may reach Vault.
#include "vault/ciphertext.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/base64.h"

namespace trousseau::vault {
namespace {

using Catch::Contains;

std::string Sealed(size_t n) { return base64::Encode(std::string(n, '\x5c')); }
std::string Ct(const std::string& version, size_t sealed = 44) {
  return "vault:v" + version + ":" + Sealed(sealed);
}

void ExpectInvalid(const std::string& ct, const std::string& fragment) {
  INFO("ciphertext: " << ct.substr(0, 80));
  auto v = ParseCiphertextVersion(ct);
  REQUIRE_FALSE(v.ok());
  CHECK(v.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(v.status().message()), Contains(fragment));
}

TEST_CASE("valid ciphertexts give their key version", "[ciphertext]") {
  CHECK(*ParseCiphertextVersion(Ct("1")) == 1);
  CHECK(*ParseCiphertextVersion(Ct("7")) == 7);
  CHECK(*ParseCiphertextVersion(Ct("42")) == 42);
  CHECK(*ParseCiphertextVersion(Ct("999999999")) == 999999999);  // nine digits: the maximum
  CHECK(*ParseCiphertextVersion(Ct("3", kMinSealedBytes)) == 3);  // exactly nonce + tag
}

TEST_CASE("the 1024-byte limit is inclusive", "[ciphertext]") {
  // "vault:v1000:" is 12 bytes; 759 bytes encode to 1012 characters: 1024 in all.
  const std::string at_limit = "vault:v1000:" + Sealed(759);
  REQUIRE(at_limit.size() == kMaxCiphertextBytes);
  auto v = ParseCiphertextVersion(at_limit);
  REQUIRE(v.ok());
  CHECK(*v == 1000);
  ExpectInvalid(at_limit + "A", "1025 bytes; the limit is 1024");
  ExpectInvalid("vault:v1:" + Sealed(3000), "the limit is 1024");
}

TEST_CASE("the caller's limit replaces the KMS v2 default", "[ciphertext]") {
  const std::string big = "vault:v2:" + Sealed(3000);  // 4009 bytes: a v1beta1-sized wrap
  ExpectInvalid(big, "the limit is 1024");
  auto v = ParseCiphertextVersion(big, kMaxV1CiphertextBytes);
  REQUIRE(v.ok());
  CHECK(*v == 2);
  auto tight = ParseCiphertextVersion(Ct("1"), 20);
  REQUIRE_FALSE(tight.ok());
  CHECK_THAT(std::string(tight.status().message()), Contains("the limit is 20"));
  // The limit is checked first: no parsing of an oversized input.
  auto huge = ParseCiphertextVersion(std::string(kMaxV1CiphertextBytes + 1, 'v'),
                                     kMaxV1CiphertextBytes);
  REQUIRE_FALSE(huge.ok());
  CHECK_THAT(std::string(huge.status().message()), Contains("131073 bytes; the limit is 131072"));
}

TEST_CASE("an empty ciphertext is refused", "[ciphertext][negative]") {
  ExpectInvalid("", "ciphertext is empty");
}

TEST_CASE("a ciphertext without the Transit prefix is refused", "[ciphertext][negative]") {
  for (const std::string& ct : std::vector<std::string>{
           std::string("k8s:enc:kms:v2:") + Sealed(44), "Vault:v1:" + Sealed(44),
        "vault:V1:" + Sealed(44), "vault:1:" + Sealed(44), std::string("vault"),
        std::string("vault:"), std::string("vault:x"),
        " vault:v1:" + Sealed(44), std::string("\0vault:v1:", 10) + Sealed(44),
        "openbao:v1:" + Sealed(44)}) {
    ExpectInvalid(ct, "expected prefix");
  }
}

TEST_CASE("malformed key versions are refused", "[ciphertext][negative]") {
  ExpectInvalid("vault:v0:" + Sealed(44), "malformed");
  ExpectInvalid("vault:v01:" + Sealed(44), "malformed");
  ExpectInvalid("vault:v00:" + Sealed(44), "malformed");
  ExpectInvalid("vault:v:" + Sealed(44), "malformed");
  ExpectInvalid("vault:v-1:" + Sealed(44), "malformed");
  ExpectInvalid("vault:v+1:" + Sealed(44), "malformed");
  ExpectInvalid("vault:v", "malformed");
}

TEST_CASE("huge key versions are refused without overflow", "[ciphertext][negative]") {
  ExpectInvalid(Ct("1000000000"), "out of range");  // ten digits
  ExpectInvalid(Ct("9223372036854775808"), "out of range");
  ExpectInvalid(Ct(std::string(500, '9')), "out of range");
}

TEST_CASE("a missing ':' after the version is refused", "[ciphertext][negative]") {
  ExpectInvalid("vault:v1", "no ':'");
  ExpectInvalid("vault:v12", "no ':'");
  ExpectInvalid("vault:v1" + Sealed(44), "no ':'");
  ExpectInvalid("vault:v1;" + Sealed(44), "no ':'");
  ExpectInvalid("vault:v1x:" + Sealed(44), "no ':'");
}

TEST_CASE("a payload that is not strict base64 is refused", "[ciphertext][negative]") {
  ExpectInvalid("vault:v1:" + Sealed(44).substr(1), "not valid base64");   // bad length
  ExpectInvalid("vault:v1:" + Sealed(44) + "\n", "not valid base64");      // whitespace
  ExpectInvalid("vault:v1:@@@@" + Sealed(44), "not valid base64");         // alphabet
  ExpectInvalid("vault:v1:-_-_" + Sealed(44), "not valid base64");         // base64url
  ExpectInvalid("vault:v1:AA==" + Sealed(44), "not valid base64");         // inner padding
  ExpectInvalid("vault:v1:vault:v1:" + Sealed(44), "not valid base64");    // doubled prefix
}

TEST_CASE("a payload too short to hold nonce and tag is refused", "[ciphertext][negative]") {
  ExpectInvalid("vault:v1:", "too short");
  ExpectInvalid(Ct("1", kMinSealedBytes - 1), "too short");
  ExpectInvalid(Ct("1", 1), "too short");
}

}  // namespace
}  // namespace trousseau::vault
