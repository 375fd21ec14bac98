// The KMS contract's limits, checked before any network call: plaintext size, the KMS v2
// wrapped-size cap, key_id length, annotation keys and total size, ciphertext shape.
#include <catch2/catch.hpp>
#include <map>
#include <string>
#include <vector>

#include "common/base64.h"
#include "envelope/key_service.h"
#include "vault/ciphertext.h"

namespace trousseau::envelope {
namespace {

using Catch::Contains;

std::string Ct() { return "vault:v1:" + base64::Encode(std::string(60, 'c')); }
std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST_CASE("CheckPlaintext: 1 to 65536 bytes", "[limits]") {
  auto empty = CheckPlaintext("");
  CHECK(empty.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Msg(empty) == "plaintext is empty");
  CHECK(CheckPlaintext("x").ok());
  CHECK(CheckPlaintext(std::string(32, 's')).ok());
  CHECK(CheckPlaintext(std::string(65536, 's')).ok());
  auto over = CheckPlaintext(std::string(65537, 's'));
  CHECK(over.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Msg(over) == "plaintext is 65537 bytes; the limit is 65536");
  CHECK(Msg(over).find("sss") == std::string::npos);
}

TEST_CASE("CheckV2WrappedSizeFits: the wrapped plaintext must fit in 1024 bytes", "[limits]") {
  CHECK(CheckV2WrappedSizeFits(std::string(32, 's')).ok());
  CHECK(CheckV2WrappedSizeFits(std::string(725, 's')).ok());
  auto over = CheckV2WrappedSizeFits(std::string(726, 's'));
  CHECK(over.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(over), Contains("726 bytes"));
  CHECK_THAT(Msg(over), Contains("1024"));
}

TEST_CASE("EstimatedWrappedSize bounds the real Transit ciphertext length", "[limits]") {
  for (size_t n : {size_t{0}, size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{725},
                   size_t{726}, size_t{4096}}) {
    INFO("plaintext bytes: " << n);
    const std::string sealed(vault::kMinSealedBytes + n, 'x');
    const size_t worst = ("vault:v999999999:" + base64::Encode(sealed)).size();
    const size_t usual = ("vault:v1:" + base64::Encode(sealed)).size();
    CHECK(EstimatedWrappedSize(n) == worst);
    CHECK(EstimatedWrappedSize(n) >= usual);
  }
}

TEST_CASE("CheckDecryptInput: key_id up to 1024 bytes", "[limits]") {
  CHECK(CheckDecryptInput(Ct(), "", {}).ok());
  CHECK(CheckDecryptInput(Ct(), std::string(1024, 'k'), {}).ok());
  auto over = CheckDecryptInput(Ct(), std::string(1025, 'k'), {});
  CHECK(over.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Msg(over) == "key_id is 1025 bytes; the limit is 1024");
}

TEST_CASE("CheckDecryptInput: annotation keys must be FQDNs", "[limits][negative]") {
  CHECK(CheckDecryptInput(Ct(), "k", {{"kms.example.com", "v"}, {"a.b", ""}}).ok());
  auto bad = CheckDecryptInput(Ct(), "k", {{"kms.example.com", "v"}, {"NotAnFqdn", "v"}});
  CHECK(bad.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(bad), Contains("not a fully qualified domain name"));
  CHECK_THAT(Msg(bad), Contains("\"NotAnFqdn\""));
  // A long bad key is clipped in the message.
  auto long_key = CheckDecryptInput(Ct(), "k", {{std::string(500, 'Z'), "v"}});
  CHECK(long_key.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Msg(long_key).size() < 200);
  // The caller's bytes are shown printable-only (found by tests/fuzz, decrypt_input): no
  // terminal escape or newline reaches the message and the logs.
  auto ctrl = CheckDecryptInput(Ct(), "k", {{"bad\x1b[2J\nkey.example.com", "v"}});
  CHECK(Msg(ctrl) == "annotation key is not a fully qualified domain name: \"bad?[2J?key.example.com\"");
}

TEST_CASE("CheckDecryptInput: annotations up to 32 KiB in total", "[limits]") {
  const std::string key = "a.example.com";  // 13 bytes
  CHECK(CheckDecryptInput(Ct(), "k", {{key, std::string(32768 - 13, 'v')}}).ok());
  auto over = CheckDecryptInput(Ct(), "k", {{key, std::string(32768 - 12, 'v')}});
  CHECK(over.code() == absl::StatusCode::kInvalidArgument);
  CHECK(Msg(over) == "annotations are 32769 bytes; the limit is 32768");
  // Keys and values of all annotations count together.
  std::map<std::string, std::string> many;
  for (int i = 0; i < 4; ++i) many["k" + std::to_string(i) + ".example.com"] = std::string(8200, 'v');
  auto sum = CheckDecryptInput(Ct(), "k", many);
  CHECK(sum.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(Msg(sum), Contains("annotations are"));
}

TEST_CASE("CheckDecryptInput: the ciphertext must be a Transit ciphertext", "[limits][negative]") {
  for (const std::string& ct :
       std::vector<std::string>{"", "garbage", "vault:v0:AAAA", "vault:v1:AAAA", "vault:v1",
                                "vault:v1:" + base64::Encode(std::string(60, 'c')) + "="}) {
    INFO(ct);
    auto st = CheckDecryptInput(ct, "k", {});
    CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  }
  // v1beta1-sized ciphertexts pass here; the v2 adapter enforces 1024 itself.
  CHECK(CheckDecryptInput("vault:v1:" + base64::Encode(std::string(3000, 'c')), "", {}).ok());
  auto too_big = CheckDecryptInput(
      "vault:v1:" + base64::Encode(std::string(vault::kMaxV1CiphertextBytes, 'c')), "", {});
  CHECK(too_big.code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("CheckDecryptInput reports the first problem in a fixed order", "[limits]") {
  // key_id before annotations before the ciphertext.
  auto st = CheckDecryptInput("", std::string(2000, 'k'), {{"BAD", "v"}});
  CHECK_THAT(Msg(st), Contains("key_id"));
  st = CheckDecryptInput("", "k", {{"BAD", "v"}});
  CHECK_THAT(Msg(st), Contains("annotation"));
}

TEST_CASE("IsFqdn follows kube-apiserver's rule for annotation keys", "[limits][fqdn]") {
  const std::string l63(63, 'a');
  const std::string l64(64, 'a');
  const std::string n253 = l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b');
  const std::string n254 = l63 + "." + l63 + "." + l63 + "." + std::string(62, 'b');
  REQUIRE(n253.size() == 253);

  const std::vector<std::string> good = {
      "a.b", "example.com", "kms.k8s.io", "a-b.c-d", "1.2", "0a.9z",
      "xn--bcher-kva.example", "a--b.com", l63 + ".com", n253,
      "example.com.",   // one trailing dot, as k8s allows
      n253 + ".",
  };
  for (const auto& name : good) {
    INFO("\"" << name << "\"");
    CHECK(IsFqdn(name));
  }

  const std::vector<std::string> bad = {
      "", ".", "..", "com", "example", "com.", ".example.com", "example..com", "example.com..",
      "-a.com", "a-.com", "a.-b", "a.b-", "Example.com", "EXAMPLE.COM", "a_b.com", "a b.com",
      " a.com", "a.com ", l64 + ".com", n254, n254 + ".", "a.b/c", "*.example.com",
      "\xc3\xa4.com", std::string("a\0.com", 6), "a.com\n", "a:b.com",
  };
  for (const auto& name : bad) {
    INFO("\"" << name << "\"");
    CHECK_FALSE(IsFqdn(name));
  }
}

}  // namespace
}  // namespace trousseau::envelope
