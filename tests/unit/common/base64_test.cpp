// base64: RFC 4648 section 10 vectors both ways, binary round trips, and the strict decoder's
// refusals (length, alphabet, padding, whitespace) with the message naming the problem.
#include "common/base64.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace trousseau::base64 {
namespace {

using Catch::Contains;

struct Vector {
  std::string plain, encoded;
};

// RFC 4648, section 10.
const std::vector<Vector> kRfc4648 = {
    {"", ""},           {"f", "Zg=="},         {"fo", "Zm8="},        {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
};

TEST_CASE("base64 encodes the RFC 4648 test vectors", "[base64]") {
  for (const auto& v : kRfc4648) {
    INFO("plain=\"" << v.plain << "\"");
    CHECK(Encode(v.plain) == v.encoded);
    CHECK(EncodedLength(v.plain.size()) == v.encoded.size());
  }
}

TEST_CASE("base64 decodes the RFC 4648 test vectors", "[base64]") {
  for (const auto& v : kRfc4648) {
    INFO("encoded=\"" << v.encoded << "\"");
    auto d = Decode(v.encoded);
    REQUIRE(d.ok());
    CHECK(*d == v.plain);
  }
}

TEST_CASE("base64 EncodeInto writes a terminating NUL", "[base64]") {
  const uint8_t in[] = {'f', 'o', 'o', 'b'};
  std::string out(EncodedLength(sizeof(in)) + 1, 'X');
  EncodeInto(in, sizeof(in), out.data());
  CHECK(std::string(out.c_str()) == "Zm9vYg==");
  CHECK(out.back() == '\0');
}

TEST_CASE("base64 round-trips every byte value, including + and /", "[base64]") {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t len = 0; len <= all.size(); len += 37) {
    const std::string in = all.substr(0, len);
    auto d = Decode(Encode(in));
    REQUIRE(d.ok());
    CHECK(*d == in);
  }
  CHECK(Encode(std::string("\xfb\xff", 2)) == "+/8=");
  auto d = Decode("+/8=");
  REQUIRE(d.ok());
  CHECK(*d == std::string("\xfb\xff", 2));
}

TEST_CASE("base64 DecodeInto reports the exact decoded length", "[base64]") {
  for (const auto& v : kRfc4648) {
    std::vector<uint8_t> out(MaxDecodedLength(v.encoded.size()));
    auto n = DecodeInto(v.encoded, out.data());
    REQUIRE(n.ok());
    CHECK(*n == v.plain.size());
    CHECK(std::string(out.begin(), out.begin() + static_cast<long>(*n)) == v.plain);
    CHECK(MaxDecodedLength(v.encoded.size()) >= v.plain.size());
  }
}

TEST_CASE("base64 decoding rejects lengths that are not a multiple of 4", "[base64][negative]") {
  for (const char* bad : {"Z", "Zg", "Zg=", "Zm9vY", "Zm9vYg=", "Zm9vYg==="}) {
    INFO(bad);
    auto d = Decode(bad);
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(d.status().message()), Contains("multiple of 4"));
  }
}

TEST_CASE("base64 decoding rejects characters outside the alphabet", "[base64][negative]") {
  const std::vector<std::string> bad = {
      "Zm9-",  // base64url
      "Zm9_",  // base64url
      "Zm9v!A==", "Zm@v", "Zm.v",
      std::string("Zm\0v", 4),   // NUL
      std::string("Zm\xffv", 4),  // non-ASCII
  };
  for (const auto& b : bad) {
    INFO(b);
    auto d = Decode(b);
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK_THAT(std::string(d.status().message()), Contains("alphabet"));
  }
}

TEST_CASE("base64 decoding rejects whitespace anywhere", "[base64][negative]") {
  // Same lengths as valid input so that only the whitespace can be the reason.
  for (const char* bad : {" Zm9", "Zm9 ", "Zm\n9", "\tZm9", "Zm9v\r\nYg=", "Zm9vYg=\n"}) {
    INFO(bad);
    auto d = Decode(bad);
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  }
}

TEST_CASE("base64 decoding rejects misplaced padding", "[base64][negative]") {
  for (const char* bad : {"====", "Z===", "=Zm9", "Zm=v", "Zg==Zg==", "Zm9v====", "Zm8=Zm8="}) {
    INFO(bad);
    auto d = Decode(bad);
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  }
  // Padding followed by a data character in the last quantum.
  auto d = Decode("Zg=a");
  REQUIRE_FALSE(d.ok());
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("base64 length helpers", "[base64]") {
  CHECK(EncodedLength(0) == 0);
  CHECK(EncodedLength(1) == 4);
  CHECK(EncodedLength(3) == 4);
  CHECK(EncodedLength(4) == 8);
  CHECK(EncodedLength(32) == 44);
  CHECK(MaxDecodedLength(4) >= 3);
  CHECK(MaxDecodedLength(44) >= 32);
}

}  // namespace
}  // namespace trousseau::base64

TEST_CASE("base64 refuses non-canonical text (non-zero bits after the data)", "[base64][negative]") {
  // "AA==" and "AAA=" are canonical; changing the unused low bits of the last character is not.
  CHECK(trousseau::base64::Decode("AA==").ok());
  CHECK(trousseau::base64::Decode("AAA=").ok());
  for (const char* bad : {"AB==", "AP==", "AAB=", "AAD=", "Aa=="}) {
    INFO(bad);
    auto r = trousseau::base64::Decode(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(std::string(r.status().message()).find("not canonical") != std::string::npos);
  }
  // Every canonical encoding of 1..3 bytes still decodes to itself.
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    CHECK(trousseau::base64::Decode(trousseau::base64::Encode(one)).value() == one);
    const std::string two = one + "\x5a";
    CHECK(trousseau::base64::Decode(trousseau::base64::Encode(two)).value() == two);
  }
}
