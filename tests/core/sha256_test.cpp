#include "xfer/core/sha256.h"

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "support/support.h"
#include "xfer/core/error.h"

namespace xfer {
namespace {

// FIPS 180-2 / NIST CAVS example digests.
constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* k448 = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr const char* k896 = "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1";
constexpr const char* kMillionA =
    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen() & 0xff);
  return s;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

// Runs a command and returns its stdout.
std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ::pclose(p);
  return out;
}

TEST(Sha256Test, NistVectors) {
  EXPECT_EQ(sha256_hex(""), kEmpty);
  EXPECT_EQ(sha256_hex("abc"), kAbc);
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), k448);
  EXPECT_EQ(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopj"
                       "klmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            k896);
}

TEST(Sha256Test, MillionAsOneShot) { EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), kMillionA); }

TEST(Sha256Test, MillionAsInUnevenChunks) {
  const std::string a(1000000, 'a');
  Sha256 h;
  size_t pos = 0;
  // Chunk sizes cycle through values around the 64-byte block size and larger.
  const size_t sizes[] = {1, 63, 64, 65, 7, 127, 128, 129, 1000, 3, 55, 56, 57, 4096, 0};
  size_t i = 0;
  while (pos < a.size()) {
    size_t n = std::min(sizes[i++ % (sizeof sizes / sizeof sizes[0])], a.size() - pos);
    h.update(a.data() + pos, n);
    pos += n;
  }
  EXPECT_EQ(h.hex_digest(), kMillionA);
}

TEST(Sha256Test, IncrementalEqualsOneShot) {
  std::string data = random_bytes(10007, 1);
  std::string expected = sha256_hex(data);
  for (size_t split : {0, 1, 55, 56, 63, 64, 65, 5000, 10006, 10007}) {
    Sha256 h;
    h.update(data.substr(0, split)).update(data.substr(split));
    EXPECT_EQ(h.hex_digest(), expected) << "split at " << split;
  }
  // Byte by byte.
  Sha256 h;
  for (char c : data) h.update(&c, 1);
  EXPECT_EQ(h.hex_digest(), expected);
}

TEST(Sha256Test, DigestBytesMatchHex) {
  Sha256 h;
  h.update("abc");
  auto d = h.digest();
  std::string hex;
  char buf[3];
  for (uint8_t b : d) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    hex += buf;
  }
  EXPECT_EQ(hex, kAbc);
}

TEST(Sha256Test, ObjectIsResetAfterDigest) {
  Sha256 h;
  h.update("some prefix that must not leak");
  EXPECT_NE(h.hex_digest(), kAbc);
  h.update("abc");
  EXPECT_EQ(h.hex_digest(), kAbc);
  EXPECT_EQ(h.hex_digest(), kEmpty);
}

TEST(Sha256Test, DistinctInputsGiveDistinctDigests) {
  EXPECT_NE(sha256_hex("abc"), sha256_hex("abd"));
  EXPECT_NE(sha256_hex(std::string(1, '\0')), sha256_hex(""));
  EXPECT_NE(sha256_hex(std::string(64, 'a')), sha256_hex(std::string(65, 'a')));
}

TEST(Sha256Test, FileEqualsHexOfContent) {
  testing::TempDir dir;
  // Larger than the 1 MiB read buffer, so the file is hashed in several reads.
  std::string data = random_bytes((1 << 20) * 2 + 333, 2);
  write_raw(dir.file("blob.bin"), data);
  EXPECT_EQ(sha256_file(dir.file("blob.bin")), sha256_hex(data));
  write_raw(dir.file("empty.bin"), "");
  EXPECT_EQ(sha256_file(dir.file("empty.bin")), kEmpty);
}

TEST(Sha256Test, FileMatchesSha256sum) {
  if (std::system("command -v sha256sum >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "sha256sum is not installed";
  }
  testing::TempDir dir;
  // Lengths around the padding boundaries plus a large random one.
  std::vector<size_t> lengths = {1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1234567};
  std::string cmd = "cd '" + dir.path() + "' && sha256sum";
  std::vector<std::string> contents;
  for (size_t i = 0; i < lengths.size(); ++i) {
    contents.push_back(random_bytes(lengths[i], 100 + static_cast<uint32_t>(i)));
    std::string name = "f" + std::to_string(i);
    write_raw(dir.file(name), contents.back());
    cmd += " " + name;
  }
  std::string out = run_capture(cmd);
  std::istringstream lines(out);
  std::string digest, name;
  size_t seen = 0;
  while (lines >> digest >> name) {
    ASSERT_EQ(name, "f" + std::to_string(seen));
    EXPECT_EQ(sha256_file(dir.file(name)), digest) << "length " << lengths[seen];
    EXPECT_EQ(sha256_hex(contents[seen]), digest) << "length " << lengths[seen];
    ++seen;
  }
  EXPECT_EQ(seen, lengths.size()) << "sha256sum output: " << out;
}

TEST(Sha256Test, MissingFileThrowsNamingPath) {
  testing::TempDir dir;
  const std::string path = dir.file("nope.bin");
  try {
    sha256_file(path);
    FAIL() << "sha256_file did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Sha256Test, DirectoryThrows) {
  testing::TempDir dir;
  EXPECT_THROW(sha256_file(dir.path()), Error);
}

}  // namespace
}  // namespace xfer
