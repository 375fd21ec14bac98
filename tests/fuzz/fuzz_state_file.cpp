// Fuzz target: the state file parser (envelope/state_file.h, docs/formats.md section 5): bytes
// read from a host file at start, perhaps damaged or written by someone else.
// Invariants:
// - an error is INVALID_ARGUMENT, non-empty, one printable line, bounded (it goes into the one
//   line the plugin prints before exiting), whatever bytes the file held;
// - an accepted file has only positive versions, no created version above its high_version,
//   printable bounded identities and creation times;
// - it round-trips: SerializeState of what was read parses again to the same marks.
#include <cstdint>
#include <string>

#include "envelope/state_file.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace trousseau::envelope;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto parsed = ParseState(text);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument, "code");
    trousseau::fuzz::CheckErrorMessage(parsed.status(), "ParseState", 512);
    return 0;
  }
  for (const auto& [id, mark] : *parsed) {
    FUZZ_CHECK(!id.empty() && id.size() <= kMaxStateIdentityBytes, "identity length");
    FUZZ_CHECK(trousseau::fuzz::IsPrintableLine(id), "identity printable");
    FUZZ_CHECK(mark.high_version >= 1, "high_version positive");
    for (const auto& [v, t] : mark.created) {
      FUZZ_CHECK(v >= 1 && v <= mark.high_version, "created version in range");
      FUZZ_CHECK(!t.empty() && t.size() <= kMaxCreationTimeBytes, "creation time length");
      FUZZ_CHECK(trousseau::fuzz::IsPrintableLine(t), "creation time printable");
    }
  }
  auto again = ParseState(SerializeState(*parsed));
  FUZZ_CHECK(again.ok(), "written file parses again");
  FUZZ_CHECK(*again == *parsed, "round trip");
  return 0;
}
