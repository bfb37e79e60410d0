#include "xfer/data/idx.h"

#include <string>

#include <zlib.h>

#include "support/errors.h"
#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"

namespace xfer::data {
namespace {

using xfer::testing::SeededTest;
using xfer::testing::TempDir;
using xfer::testing::expect_error_naming;


std::string idx_bytes(uint8_t type, const std::vector<uint32_t>& dims, size_t payload) {
  std::string b = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(static_cast<char>(d >> 24));
    b.push_back(static_cast<char>(d >> 16));
    b.push_back(static_cast<char>(d >> 8));
    b.push_back(static_cast<char>(d));
  }
  for (size_t i = 0; i < payload; ++i) b.push_back(static_cast<char>(i * 7));
  return b;
}

class IdxTest : public SeededTest {};

TEST_F(IdxTest, RoundTripRaw) {
  TempDir dir;
  auto t = torch::randint(0, 256, {5, 3, 4}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("a.idx"), t);
  auto bytes = read_file(dir.file("a.idx"));
  ASSERT_EQ(bytes.size(), 4u + 3 * 4 + 60);
  EXPECT_EQ(static_cast<uint8_t>(bytes[2]), 0x08);
  EXPECT_EQ(static_cast<uint8_t>(bytes[3]), 3);
  EXPECT_EQ(static_cast<uint8_t>(bytes[7]), 5);  // big-endian first dim
  EXPECT_TENSOR_EQ(read_idx(dir.file("a.idx")), t);
}

TEST_F(IdxTest, RoundTripGzip) {
  TempDir dir;
  auto t = torch::randint(0, 256, {7, 2, 6, 5}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("a.gz"), t);
  auto bytes = read_file(dir.file("a.gz"));
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), 0x1f);
  EXPECT_EQ(static_cast<uint8_t>(bytes[1]), 0x8b);
  EXPECT_TENSOR_EQ(read_idx(dir.file("a.gz")), t);
  // 1-d as well.
  auto v = torch::arange(0, 200, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("v.gz"), v);
  EXPECT_TENSOR_EQ(read_idx(dir.file("v.gz")), v);
}

TEST_F(IdxTest, GzipDetectedByMagicNotName) {
  TempDir dir;
  auto t = torch::randint(0, 256, {3, 3}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("a.gz"), t);
  write_file_atomic(dir.file("plain-name"), read_file(dir.file("a.gz")));
  EXPECT_TENSOR_EQ(read_idx(dir.file("plain-name")), t);
}

TEST_F(IdxTest, RejectsWrongMagic) {
  TempDir dir;
  auto b = idx_bytes(0x08, {2}, 2);
  b[0] = 1;
  write_file_atomic(dir.file("bad-magic"), b);
  expect_error_naming([&] { read_idx(dir.file("bad-magic")); }, dir.file("bad-magic"));
}

TEST_F(IdxTest, RejectsWrongType) {
  TempDir dir;
  write_file_atomic(dir.file("float.idx"), idx_bytes(0x0D, {2}, 8));
  expect_error_naming([&] { read_idx(dir.file("float.idx")); }, dir.file("float.idx"));
  expect_error_naming([&] { read_idx(dir.file("float.idx")); }, "0x08");
}

TEST_F(IdxTest, RejectsBadDimensionCount) {
  TempDir dir;
  write_file_atomic(dir.file("d0"), idx_bytes(0x08, {}, 0));
  expect_error_naming([&] { read_idx(dir.file("d0")); }, dir.file("d0"));
  write_file_atomic(dir.file("d5"), idx_bytes(0x08, {1, 1, 1, 1, 1}, 1));
  expect_error_naming([&] { read_idx(dir.file("d5")); }, dir.file("d5"));
}

TEST_F(IdxTest, RejectsTruncatedAndOversizedPayload) {
  TempDir dir;
  write_file_atomic(dir.file("short"), idx_bytes(0x08, {4, 5}, 19));
  expect_error_naming([&] { read_idx(dir.file("short")); }, dir.file("short"));
  write_file_atomic(dir.file("long"), idx_bytes(0x08, {4, 5}, 21));
  expect_error_naming([&] { read_idx(dir.file("long")); }, dir.file("long"));
  // Header cut in the middle of the dimensions.
  write_file_atomic(dir.file("header"), idx_bytes(0x08, {4, 5}, 0).substr(0, 9));
  expect_error_naming([&] { read_idx(dir.file("header")); }, dir.file("header"));
  // Dimensions whose product overflows 64 bits must not allocate.
  write_file_atomic(dir.file("huge"),
                    idx_bytes(0x08, {0xffffffffu, 0xffffffffu, 0xffffffffu, 2}, 4));
  expect_error_naming([&] { read_idx(dir.file("huge")); }, dir.file("huge"));
}

TEST_F(IdxTest, RejectsTruncatedGzip) {
  TempDir dir;
  auto t = torch::randint(0, 256, {50, 28, 28}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("a.gz"), t);
  auto bytes = read_file(dir.file("a.gz"));
  write_file_atomic(dir.file("cut.gz"), bytes.substr(0, bytes.size() / 2));
  expect_error_naming([&] { read_idx(dir.file("cut.gz")); }, dir.file("cut.gz"));
  // Only the 8-byte trailer missing.
  write_file_atomic(dir.file("notrailer.gz"), bytes.substr(0, bytes.size() - 8));
  expect_error_naming([&] { read_idx(dir.file("notrailer.gz")); }, dir.file("notrailer.gz"));
}

TEST_F(IdxTest, RejectsCorruptGzip) {
  TempDir dir;
  auto t = torch::randint(0, 256, {50, 28, 28}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("a.gz"), t);
  auto bytes = read_file(dir.file("a.gz"));
  // Flip bits in the deflate stream: either invalid codes or a CRC mismatch.
  for (size_t i = 20; i < 60; ++i) bytes[i] = static_cast<char>(bytes[i] ^ 0x5a);
  write_file_atomic(dir.file("bad.gz"), bytes);
  expect_error_naming([&] { read_idx(dir.file("bad.gz")); }, dir.file("bad.gz"));
}

TEST_F(IdxTest, GunzipHonoursOutputCap) {
  TempDir dir;
  auto t = torch::zeros({100000}, torch::kUInt8);
  write_idx(dir.file("z.gz"), t);
  auto bytes = read_file(dir.file("z.gz"));
  EXPECT_EQ(gunzip(bytes, "z").size(), 100000u + 8);
  expect_error_naming([&] { gunzip(bytes, "capped-stream", 1000); }, "capped-stream");
  expect_error_naming([&] { gunzip("not gzip", "plain-stream"); }, "plain-stream");
}

// gzip of raw bytes (the IDX writer only writes valid files).
std::string gzip_raw(const std::string& raw) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, raw.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// A small gzip file that inflates to far more than its header declares (a
// "gzip bomb") is refused after the declared payload and one byte more, not
// inflated whole; a header that declares more than 4 GiB is refused from the
// header alone.
TEST_F(IdxTest, GzipInflatesNoMoreThanTheHeaderDeclares) {
  TempDir dir;
  std::string raw = idx_bytes(0x08, {1000}, 1000) + std::string(size_t(64) << 20, '\0');
  write_file_atomic(dir.file("bomb.gz"), gzip_raw(raw));
  EXPECT_LT(read_file(dir.file("bomb.gz")).size(), size_t(1) << 20);
  expect_error_naming([&] { read_idx(dir.file("bomb.gz")); }, "trailing bytes");
  EXPECT_EQ(gunzip(read_file(dir.file("bomb.gz")), "b", size_t(1) << 32, 1009).size(), 1009u);
  EXPECT_EQ(gunzip(read_file(dir.file("bomb.gz")), "b", size_t(1) << 32, 1009).substr(0, 8),
            raw.substr(0, 8));
  write_file_atomic(dir.file("claims.gz"), gzip_raw(idx_bytes(0x08, {65536, 65536, 2}, 16)));
  expect_error_naming([&] { read_idx(dir.file("claims.gz")); }, "declare");
  // The exact payload still reads, and a short one is truncated.
  write_file_atomic(dir.file("ok.gz"), gzip_raw(idx_bytes(0x08, {10, 3}, 30)));
  EXPECT_EQ(read_idx(dir.file("ok.gz")).sizes(), (std::vector<int64_t>{10, 3}));
  write_file_atomic(dir.file("short.gz"), gzip_raw(idx_bytes(0x08, {10, 3}, 29)));
  expect_error_naming([&] { read_idx(dir.file("short.gz")); }, "file truncated");
}

TEST_F(IdxTest, ReadPairBuildsDataset) {
  TempDir dir;
  auto images = torch::randint(0, 256, {6, 4, 5}, torch::kLong).to(torch::kUInt8);
  auto labels = torch::tensor({0, 2, 1, 2, 0, 1}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("i.gz"), images);
  write_idx(dir.file("l.gz"), labels);
  auto ds = read_idx_pair(dir.file("i.gz"), dir.file("l.gz"));
  ds.validate();
  EXPECT_TENSOR_EQ(ds.images, images.unsqueeze(1));
  EXPECT_TENSOR_EQ(ds.labels, labels.to(torch::kLong));
  EXPECT_TENSOR_EQ(ds.index, torch::arange(6, torch::kLong));
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"0", "1", "2"}));
  EXPECT_NE(ds.source.find(dir.file("i.gz")), std::string::npos);

  auto named = read_idx_pair(dir.file("i.gz"), dir.file("l.gz"), {"a", "b", "c", "d"});
  EXPECT_EQ(named.num_classes(), 4);
  expect_error_naming([&] { read_idx_pair(dir.file("i.gz"), dir.file("l.gz"), {"a", "b"}); },
                      dir.file("l.gz"));
}

TEST_F(IdxTest, ReadPairAcceptsChannels) {
  TempDir dir;
  auto images = torch::randint(0, 256, {3, 3, 4, 4}, torch::kLong).to(torch::kUInt8);
  write_idx(dir.file("i"), images);
  write_idx(dir.file("l"), torch::zeros({3}, torch::kUInt8));
  auto ds = read_idx_pair(dir.file("i"), dir.file("l"));
  EXPECT_EQ(ds.channels(), 3);
  EXPECT_TENSOR_EQ(ds.images, images);
}

TEST_F(IdxTest, ReadPairRejectsCountMismatch) {
  TempDir dir;
  write_idx(dir.file("i.gz"), torch::zeros({6, 4, 4}, torch::kUInt8));
  write_idx(dir.file("l.gz"), torch::zeros({5}, torch::kUInt8));
  expect_error_naming([&] { read_idx_pair(dir.file("i.gz"), dir.file("l.gz")); },
                      dir.file("l.gz"));
  // Labels that are not 1-d, images that are 2-d.
  write_idx(dir.file("l2.gz"), torch::zeros({6, 1}, torch::kUInt8));
  expect_error_naming([&] { read_idx_pair(dir.file("i.gz"), dir.file("l2.gz")); },
                      dir.file("l2.gz"));
  write_idx(dir.file("i2.gz"), torch::zeros({6, 4}, torch::kUInt8));
  write_idx(dir.file("l6.gz"), torch::zeros({6}, torch::kUInt8));
  expect_error_naming([&] { read_idx_pair(dir.file("i2.gz"), dir.file("l6.gz")); },
                      dir.file("i2.gz"));
}

TEST_F(IdxTest, MissingFileNamesIt) {
  TempDir dir;
  expect_error_naming([&] { read_idx(dir.file("nope.gz")); }, dir.file("nope.gz"));
}

TEST_F(IdxTest, WriteRejectsNonUint8) {
  TempDir dir;
  expect_error_naming([&] { write_idx(dir.file("f.idx"), torch::zeros({2}, torch::kFloat)); },
                      dir.file("f.idx"));
}

}  // namespace
}  // namespace xfer::data
