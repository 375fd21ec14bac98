// Process-wide hygiene for memory that libraries own: when enabled, every block released through
// free() or moved by realloc() is wiped first. This reaches copies we cannot otherwise touch:
// gRPC slices, Protobuf strings, libcurl buffers, OpenSSL records, nlohmann's lexer buffers.
// The definitions live in wipe_on_free.cpp, which is compiled into the executable itself (an
// executable's free() interposes libc's for every shared library) and not into sanitizer builds.
#pragma once

namespace trousseau::hardening {

// Turns wiping on or off (on by default in the executable; `hygiene.wipe_freed_memory`).
void SetWipeFreedMemory(bool on);
bool WipeFreedMemoryAvailable();

}  // namespace trousseau::hardening
