#pragma once
/// \file
/// SHA-256 (FIPS 180-4) for content ids of weights, data and caches.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace xfer {

/// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  Sha256& update(const void* data, size_t size);
  Sha256& update(const std::string& s) { return update(s.data(), s.size()); }
  /// Finishes and returns the lowercase hex digest; the object is reset afterwards.
  std::string hex_digest();
  std::array<uint8_t, 32> digest();

 private:
  void compress(const uint8_t* block);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_;
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

/// Hex SHA-256 of a byte string.
std::string sha256_hex(const std::string& bytes);
/// Hex SHA-256 of a file's contents (streamed). Throws xfer::Error if unreadable.
std::string sha256_file(const std::string& path);

}  // namespace xfer
