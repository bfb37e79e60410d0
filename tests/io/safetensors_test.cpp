#include "xfer/io/safetensors.h"

#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/support.h"
#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/json.h"

namespace fs = std::filesystem;

namespace xfer::io {
namespace {

using xfer::testing::TempDir;

std::string le64(uint64_t n) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return s;
}

uint64_t read_le64(const std::string& bytes) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(bytes[i]);
  return v;
}

// A file from a header (JSON text) and a data buffer, as the spec lays it out.
std::string craft(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}
std::string craft(const Json& header, const std::string& data) { return craft(header.dump(), data); }

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Message of the xfer::Error parse_safetensors throws ("" with a test failure otherwise).
std::string parse_error(const std::string& bytes) {
  try {
    parse_safetensors(bytes, "test.safetensors");
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-xfer exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "parse_safetensors accepted a bad file";
  return "";
}

#define EXPECT_PARSE_ERROR(bytes, substring)                                  \
  do {                                                                        \
    std::string msg_ = parse_error(bytes);                                    \
    EXPECT_NE(msg_.find(substring), std::string::npos) << "message: " << msg_; \
    EXPECT_NE(msg_.find("test.safetensors"), std::string::npos) << msg_;      \
  } while (0)

Json entry(const std::string& dtype, std::vector<int64_t> shape, uint64_t begin, uint64_t end) {
  return Json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

class SafetensorsTest : public testing::SeededTest {};

TensorFile all_dtypes() {
  TensorFile f;
  f.add("f64", torch::randn({3, 4}, torch::kFloat64));
  f.add("f32", torch::randn({2, 3, 5}));
  f.add("f16", torch::randn({7}).to(torch::kFloat16));
  f.add("bf16", torch::randn({2, 2}).to(torch::kBFloat16));
  f.add("i64", torch::randint(-(int64_t(1) << 40), int64_t(1) << 40, {6}, torch::kInt64));
  f.add("i32", torch::randint(-100000, 100000, {3, 3}, torch::kInt32));
  f.add("i16", torch::randint(-32768, 32767, {4}, torch::kInt16));
  f.add("i8", torch::randint(-128, 127, {9}, torch::kInt8));
  f.add("u8", torch::randint(0, 255, {2, 5}, torch::kUInt8));
  f.add("bool", torch::rand({11}) > 0.5);
  return f;
}

TEST_F(SafetensorsTest, RoundTripEveryDtype) {
  TensorFile f = all_dtypes();
  TensorFile back = parse_safetensors(serialize_safetensors(f), "mem");
  ASSERT_EQ(back.tensors.size(), f.tensors.size());
  for (const auto& [name, t] : f.tensors) {
    ASSERT_TRUE(back.contains(name)) << name;
    EXPECT_TENSOR_EQ(back.at(name), t) << name;
  }
}

TEST_F(SafetensorsTest, RoundTripThroughFile) {
  TempDir dir;
  TensorFile f = all_dtypes();
  f.metadata["format"] = "pt";
  write_safetensors(dir.file("w.safetensors"), f);
  TensorFile back = read_safetensors(dir.file("w.safetensors"));
  for (const auto& [name, t] : f.tensors) EXPECT_TENSOR_EQ(back.at(name), t) << name;
  EXPECT_EQ(back.metadata, f.metadata);
}

TEST_F(SafetensorsTest, DtypeNamesRoundTrip) {
  const std::vector<std::pair<std::string, torch::Dtype>> expected = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16},
      {"BF16", torch::kBFloat16}, {"I64", torch::kInt64}, {"I32", torch::kInt32},
      {"I16", torch::kInt16},   {"I8", torch::kInt8},     {"U8", torch::kUInt8},
      {"BOOL", torch::kBool}};
  for (const auto& [name, dtype] : expected) {
    EXPECT_EQ(dtype_name(dtype), name);
    EXPECT_EQ(dtype_from_name(name), dtype);
  }
  EXPECT_THROW(dtype_name(torch::kComplexFloat), Error);
  EXPECT_THROW(dtype_from_name("f32"), Error);
  EXPECT_THROW(dtype_from_name("C64"), Error);
}

TEST_F(SafetensorsTest, ScalarAndZeroSizedTensors) {
  TensorFile f;
  f.add("scalar", torch::tensor(3.25));
  f.add("zero", torch::zeros({3, 0, 2}));
  f.add("zero_i", torch::zeros({0}, torch::kInt64));
  f.add("after", torch::arange(4, torch::kInt32));
  TensorFile back = parse_safetensors(serialize_safetensors(f), "mem");
  ASSERT_EQ(back.at("scalar").dim(), 0);
  EXPECT_TENSOR_EQ(back.at("scalar"), f.at("scalar"));
  EXPECT_EQ(back.at("zero").sizes(), (std::vector<int64_t>{3, 0, 2}));
  EXPECT_EQ(back.at("zero").scalar_type(), torch::kFloat32);
  EXPECT_EQ(back.at("zero_i").sizes(), (std::vector<int64_t>{0}));
  EXPECT_TENSOR_EQ(back.at("after"), f.at("after"));
}

TEST_F(SafetensorsTest, EmptyFileRoundTrips) {
  TensorFile back = parse_safetensors(serialize_safetensors(TensorFile{}), "mem");
  EXPECT_TRUE(back.tensors.empty());
  EXPECT_TRUE(back.metadata.empty());
}

TEST_F(SafetensorsTest, NonContiguousInput) {
  auto base = torch::randn({5, 6});
  TensorFile f;
  f.add("t", base.t());
  f.add("strided", base.slice(1, 0, 6, 2));
  f.add("expanded", torch::arange(3).view({3, 1}).expand({3, 4}));
  ASSERT_FALSE(f.at("t").is_contiguous());
  ASSERT_FALSE(f.at("strided").is_contiguous());
  TensorFile back = parse_safetensors(serialize_safetensors(f), "mem");
  for (const auto& [name, t] : f.tensors) {
    EXPECT_TENSOR_EQ(back.at(name), t) << name;
    EXPECT_TRUE(back.at(name).is_contiguous());
  }
}

TEST_F(SafetensorsTest, TensorsComeBackSortedByName) {
  TensorFile f;
  f.add("zeta", torch::ones({1}));
  f.add("alpha", torch::ones({2}));
  f.add("mid.weight", torch::ones({3}));
  TensorFile back = parse_safetensors(serialize_safetensors(f), "mem");
  ASSERT_EQ(back.tensors.size(), 3u);
  EXPECT_EQ(back.tensors[0].first, "alpha");
  EXPECT_EQ(back.tensors[1].first, "mid.weight");
  EXPECT_EQ(back.tensors[2].first, "zeta");
  EXPECT_EQ(back.at("zeta").numel(), 1);
  EXPECT_THROW(back.at("missing"), Error);
  EXPECT_FALSE(back.contains("missing"));
}

TEST_F(SafetensorsTest, ParsedTensorsOwnTheirMemory) {
  TensorFile f;
  f.add("x", torch::arange(8, torch::kFloat32));
  std::string bytes = serialize_safetensors(f);
  TensorFile back = parse_safetensors(bytes, "mem");
  std::fill(bytes.begin(), bytes.end(), '\xff');
  EXPECT_TENSOR_EQ(back.at("x"), torch::arange(8, torch::kFloat32));
}

TEST_F(SafetensorsTest, Metadata) {
  TensorFile f;
  f.add("w", torch::ones({2}));
  f.metadata = {{"format", "pt"}, {"arch", "resnet"}, {"note", "with \"quotes\" and \xc3\xa9"}};
  TensorFile back = parse_safetensors(serialize_safetensors(f), "mem");
  EXPECT_EQ(back.metadata, f.metadata);
  // Metadata is in the header under __metadata__, not a tensor.
  EXPECT_FALSE(back.contains("__metadata__"));
}

TEST_F(SafetensorsTest, LayoutFollowsSpec) {
  TensorFile f;
  f.add("a", torch::tensor({1.0f, -2.0f}));
  f.add("b", torch::tensor({0x0102}).to(torch::kInt16));
  std::string bytes = serialize_safetensors(f);
  uint64_t n = read_le64(bytes);
  ASSERT_LE(8 + n, bytes.size());
  Json header = Json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a"]["dtype"], "F32");
  EXPECT_EQ(header["a"]["shape"], Json::array({2}));
  EXPECT_EQ(header["a"]["data_offsets"], Json::array({0, 8}));
  EXPECT_EQ(header["b"]["data_offsets"], Json::array({8, 10}));
  EXPECT_EQ(bytes.size(), 8 + n + 10);
  // Little-endian IEEE 754: 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0; int16 0x0102 = 02 01.
  const std::string expected_data("\x00\x00\x80\x3f\x00\x00\x00\xc0\x02\x01", 10);
  EXPECT_EQ(bytes.substr(8 + n), expected_data);
}

TEST_F(SafetensorsTest, HeaderLengthIsEightByteAligned) {
  for (int len = 1; len <= 12; ++len) {
    TensorFile f;
    f.add(std::string(len, 'n'), torch::ones({len}));
    if (len % 3 == 0) f.metadata["k"] = std::string(len, 'v');
    std::string bytes = serialize_safetensors(f);
    uint64_t n = read_le64(bytes);
    EXPECT_EQ((8 + n) % 8, 0u) << "name length " << len;
    // The padded header is still valid JSON.
    EXPECT_NO_THROW(Json::parse(bytes.substr(8, n)));
    EXPECT_EQ(bytes.size(), 8 + n + 4 * static_cast<uint64_t>(len));
  }
}

TEST_F(SafetensorsTest, AcceptsUnpaddedHandWrittenFile) {
  Json h = {{"b", entry("I32", {2}, 8, 16)}, {"a", entry("F32", {2}, 0, 8)}};
  std::string data;
  float fa[2] = {1.5f, -4.0f};
  int32_t ib[2] = {-7, 123456};
  data.append(reinterpret_cast<const char*>(fa), 8);
  data.append(reinterpret_cast<const char*>(ib), 8);
  TensorFile f = parse_safetensors(craft(h, data), "hand");
  EXPECT_TENSOR_EQ(f.at("a"), torch::tensor({1.5f, -4.0f}));
  EXPECT_TENSOR_EQ(f.at("b"), torch::tensor({-7, 123456}, torch::kInt32));
}

// ---- bad inputs ----

TEST_F(SafetensorsTest, RejectsFileShorterThanEightBytes) {
  for (size_t n : {0, 1, 7}) EXPECT_PARSE_ERROR(std::string(n, '\0'), "too short");
  TempDir dir;
  write_raw(dir.file("short"), "abc");
  try {
    read_safetensors(dir.file("short"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("too short"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir.file("short")), std::string::npos) << e.what();
  }
}

// nlohmann keeps the last of two equal keys: the header would be read as
// whichever came last. A repeat is refused at any level; the same key in two
// objects (every tensor's "dtype") is not a repeat.
TEST_F(SafetensorsTest, RejectsAKeyListedTwice) {
  const std::string data(8, '\0');
  const std::string f32 = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  const std::string i32 = R"({"dtype":"I32","shape":[1],"data_offsets":[0,4]})";
  EXPECT_PARSE_ERROR(craft(R"({"w":)" + f32 + R"(,"w":)" + i32 + "}", data.substr(0, 4)),
                     "key 'w' twice");
  EXPECT_PARSE_ERROR(craft(std::string(R"({"w":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})"),
                           data.substr(0, 4)),
                     "key 'dtype' twice");
  EXPECT_PARSE_ERROR(craft(std::string(R"({"__metadata__":{"a":"1","a":"2"}})"), std::string()), "key 'a' twice");
  const std::string two = R"({"__metadata__":{"a":"1"},"a":)" + f32 +
                          R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  EXPECT_EQ(parse_safetensors(craft(two, data), "ok").tensors.size(), 2u);
}

TEST_F(SafetensorsTest, RejectsHeaderLengthPastEndOfFile) {
  std::string header = "{}";
  EXPECT_PARSE_ERROR(le64(header.size() + 1) + header, "past the end of the file");
  EXPECT_PARSE_ERROR(le64(1000) + std::string(100, ' '), "past the end of the file");
  EXPECT_PARSE_ERROR(le64(1), "past the end of the file");
}

TEST_F(SafetensorsTest, RejectsHugeHeaderLength) {
  EXPECT_PARSE_ERROR(le64(kMaxSafetensorsHeader + 1) + "{}", "exceeds the limit");
  EXPECT_PARSE_ERROR(le64(UINT64_MAX) + "{}", "exceeds the limit");
  EXPECT_PARSE_ERROR(le64(uint64_t(1) << 63), "exceeds the limit");
  // Through the file reader too: it must check before reading the rest.
  TempDir dir;
  write_raw(dir.file("huge"), le64(500'000'000) + "{}");
  try {
    read_safetensors(dir.file("huge"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exceeds the limit"), std::string::npos) << e.what();
  }
  write_raw(dir.file("past"), le64(64) + "{}");
  try {
    read_safetensors(dir.file("past"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("past the end"), std::string::npos) << e.what();
  }
}

TEST_F(SafetensorsTest, ReadMissingFileThrows) {
  TempDir dir;
  try {
    read_safetensors(dir.file("nope.safetensors"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("nope.safetensors")), std::string::npos);
  }
  EXPECT_THROW(read_safetensors(dir.path()), Error);
}

TEST_F(SafetensorsTest, RejectsHeaderThatIsNotJson) {
  EXPECT_PARSE_ERROR(craft(std::string("{\"a\": "), ""), "not valid JSON");
  EXPECT_PARSE_ERROR(craft(std::string("not json at all"), ""), "not valid JSON");
  EXPECT_PARSE_ERROR(craft(std::string(""), ""), "not valid JSON");
  EXPECT_PARSE_ERROR(craft(std::string("[1, 2]"), ""), "JSON object");
}

TEST_F(SafetensorsTest, RejectsBoolBytesOtherThanZeroAndOne) {
  const Json h{{"t", entry("BOOL", {2}, 0, 2)}};
  EXPECT_PARSE_ERROR(craft(h, std::string("\x01\x02", 2)), "holds byte 2");
  auto ok = parse_safetensors(craft(h, std::string("\x01\x00", 2)), "ok.safetensors");
  EXPECT_TRUE(ok.at("t")[0].item<bool>());
  EXPECT_FALSE(ok.at("t")[1].item<bool>());
}

TEST_F(SafetensorsTest, RejectsUnknownDtype) {
  EXPECT_PARSE_ERROR(craft(Json{{"t", entry("C64", {1}, 0, 8)}}, std::string(8, '\0')),
                     "unsupported dtype 'C64'");
  EXPECT_PARSE_ERROR(craft(Json{{"t", entry("f32", {1}, 0, 4)}}, std::string(4, '\0')),
                     "unsupported dtype");
}

TEST_F(SafetensorsTest, RejectsMalformedEntries) {
  const std::string d(4, '\0');
  EXPECT_PARSE_ERROR(craft(Json{{"t", 5}}, d), "'t'");
  EXPECT_PARSE_ERROR(
      craft(Json{{"t", {{"shape", {1}}, {"data_offsets", {0, 4}}}}}, d), "missing dtype");
  EXPECT_PARSE_ERROR(
      craft(Json{{"t", {{"dtype", "F32"}, {"data_offsets", {0, 4}}}}}, d), "missing shape");
  EXPECT_PARSE_ERROR(
      craft(Json{{"t", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {0, 2, 4}}}}}, d),
      "data_offsets");
  EXPECT_PARSE_ERROR(
      craft(Json{{"t", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {-4, 4}}}}}, d),
      "data_offsets must be non-negative");
  EXPECT_PARSE_ERROR(
      craft(Json{{"t", {{"dtype", "F32"}, {"shape", {1.5}}, {"data_offsets", {0, 4}}}}}, d),
      "shape entries");
}

TEST_F(SafetensorsTest, RejectsDataOffsetsEndPastData) {
  EXPECT_PARSE_ERROR(craft(Json{{"t", entry("F32", {2}, 0, 8)}}, std::string(4, '\0')),
                     "past the end of the data");
}

TEST_F(SafetensorsTest, RejectsBeginAfterEnd) {
  EXPECT_PARSE_ERROR(craft(Json{{"t", entry("F32", {1}, 8, 4)}}, std::string(8, '\0')),
                     "begin > end");
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  Json h = {{"a", entry("F32", {2}, 0, 8)}, {"b", entry("F32", {2}, 4, 12)}};
  EXPECT_PARSE_ERROR(craft(h, std::string(12, '\0')), "overlaps");
  // Two tensors on exactly the same bytes.
  Json same = {{"a", entry("F32", {2}, 0, 8)}, {"b", entry("F32", {2}, 0, 8)}};
  EXPECT_PARSE_ERROR(craft(same, std::string(8, '\0')), "overlaps");
}

TEST_F(SafetensorsTest, RejectsHoleBetweenTensors) {
  Json h = {{"a", entry("F32", {2}, 0, 8)}, {"b", entry("F32", {2}, 12, 20)}};
  EXPECT_PARSE_ERROR(craft(h, std::string(20, '\0')), "hole");
  Json leading = {{"a", entry("F32", {1}, 4, 8)}};
  EXPECT_PARSE_ERROR(craft(leading, std::string(8, '\0')), "hole");
}

TEST_F(SafetensorsTest, RejectsTrailingBytes) {
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F32", {2}, 0, 8)}}, std::string(12, '\0')),
                     "trailing");
  EXPECT_PARSE_ERROR(craft(Json::object(), std::string(3, '\0')), "trailing");
}

TEST_F(SafetensorsTest, RejectsByteLengthNotMatchingDtypeTimesShape) {
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F32", {3}, 0, 8)}}, std::string(8, '\0')),
                     "do not match dtype F32");
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F64", {2, 2}, 0, 16)}}, std::string(16, '\0')),
                     "do not match dtype");
  // A zero-sized tensor must span zero bytes.
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F32", {2, 0}, 0, 4)}}, std::string(4, '\0')),
                     "do not match dtype");
}

TEST_F(SafetensorsTest, RejectsNegativeShapeEntry) {
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F32", {-1}, 0, 4)}}, std::string(4, '\0')),
                     "non-negative");
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F32", {2, -2}, 0, 16)}}, std::string(16, '\0')),
                     "non-negative");
}

TEST_F(SafetensorsTest, RejectsShapesThatOverflow) {
  // 2^31 x 2^31 x 2^31 elements: must fail on size, not allocate or wrap around.
  const int64_t big = int64_t(1) << 31;
  EXPECT_PARSE_ERROR(craft(Json{{"a", entry("F32", {big, big, big}, 0, 4)}}, std::string(4, '\0')),
                     "'a'");
  // 2^62 x 4 bytes wraps to 0 in 64 bits.
  EXPECT_PARSE_ERROR(
      craft(Json{{"a", entry("F32", {int64_t(1) << 62, 1}, 0, 0)}}, std::string()), "'a'");
  // Empty (a zero dimension), yet torch multiplies the others and would throw
  // its own overflow error: refused here, naming the tensor.
  EXPECT_PARSE_ERROR(
      craft(Json{{"a", entry("F32", {int64_t(1) << 32, int64_t(1) << 32, 0}, 0, 0)}}, std::string()),
      "'a'");
  // A zero dimension beside sizes torch can multiply is an empty tensor.
  auto ok = parse_safetensors(
      craft(Json{{"a", entry("F32", {int64_t(1) << 20, int64_t(1) << 20, 0}, 0, 0)}}, std::string()), "x");
  EXPECT_EQ(ok.at("a").numel(), 0);
}

TEST_F(SafetensorsTest, RejectsNonStringMetadata) {
  Json h = {{"__metadata__", {{"k", 1}}}, {"a", entry("F32", {1}, 0, 4)}};
  EXPECT_PARSE_ERROR(craft(h, std::string(4, '\0')), "__metadata__ value of 'k' is not a string");
  Json h2 = {{"__metadata__", {1, 2}}};
  EXPECT_PARSE_ERROR(craft(h2, ""), "__metadata__");
}

TEST_F(SafetensorsTest, WriteRejectsDuplicateNames) {
  TensorFile f;
  f.add("w", torch::ones({2}));
  f.add("b", torch::ones({1}));
  f.add("w", torch::zeros({2}));
  try {
    serialize_safetensors(f);
    FAIL() << "duplicate names accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name 'w'"), std::string::npos)
        << e.what();
  }
  TempDir dir;
  EXPECT_THROW(write_safetensors(dir.file("dup.safetensors"), f), Error);
  EXPECT_FALSE(fs::exists(dir.file("dup.safetensors")));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST_F(SafetensorsTest, WriteRejectsReservedNameUndefinedAndUnsupported) {
  TensorFile reserved;
  reserved.add("__metadata__", torch::ones({1}));
  EXPECT_THROW(serialize_safetensors(reserved), Error);
  TensorFile undefined;
  undefined.add("u", torch::Tensor());
  EXPECT_THROW(serialize_safetensors(undefined), Error);
  TensorFile complex;
  complex.add("c", torch::zeros({2}, torch::kComplexFloat));
  EXPECT_THROW(serialize_safetensors(complex), Error);
}

// ---- interop with an independent writer/reader (Python + numpy, by hand from the spec) ----

bool have_python_numpy() {
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

int run_python(const std::string& script_path, const std::string& arg, const std::string& log) {
  std::string cmd = "/usr/bin/python3 '" + script_path + "' '" + arg + "' >'" + log + "' 2>&1";
  int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

constexpr const char* kPythonWriter = R"PY(
import json, struct, sys
import numpy as np

out = sys.argv[1]
a = np.arange(6, dtype="<f4").reshape(2, 3)
b = np.array([-5, 0, 7, 2**40], dtype="<i8")
c = np.array([0, 1, 127, 128, 255], dtype=np.uint8)
h = np.array([0.5, -1.25, 2048.0], dtype="<f2")
bf = (np.array([1.0, -2.5, 0.15625], dtype="<f4").view("<u4") >> 16).astype("<u2")
m = np.array([True, False, True])
# Data laid out in an order different from the names' order.
items = [("z_u8", c, "U8"), ("a_f32", a, "F32"), ("m_bool", m, "BOOL"),
         ("b_i64", b, "I64"), ("h_f16", h, "F16"), ("bf_bf16", bf, "BF16")]
header = {}
buf = b""
for name, arr, dt in items:
    raw = arr.tobytes()
    header[name] = {"dtype": dt, "shape": list(arr.shape),
                    "data_offsets": [len(buf), len(buf) + len(raw)]}
    buf += raw
header["__metadata__"] = {"source": "python"}
hdr = json.dumps(header).encode("utf-8")  # not padded: readers must not require it
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(hdr)))
    f.write(hdr)
    f.write(buf)
)PY";

TEST(SafetensorsInteropTest, ReadsFileWrittenByPython) {
  if (!have_python_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is not available";
  TempDir dir;
  write_raw(dir.file("writer.py"), kPythonWriter);
  int rc = run_python(dir.file("writer.py"), dir.file("py.safetensors"), dir.file("log"));
  ASSERT_EQ(rc, 0) << read_file(dir.file("log"));
  TensorFile f = read_safetensors(dir.file("py.safetensors"));
  EXPECT_EQ(f.tensors.size(), 6u);
  EXPECT_TENSOR_EQ(f.at("a_f32"), torch::arange(6, torch::kFloat32).reshape({2, 3}));
  EXPECT_TENSOR_EQ(f.at("b_i64"),
                   torch::tensor({int64_t(-5), int64_t(0), int64_t(7), int64_t(1) << 40}));
  EXPECT_TENSOR_EQ(f.at("z_u8"), torch::tensor({0, 1, 127, 128, 255}).to(torch::kUInt8));
  EXPECT_TENSOR_EQ(f.at("h_f16"), torch::tensor({0.5f, -1.25f, 2048.0f}).to(torch::kFloat16));
  EXPECT_TENSOR_EQ(f.at("bf_bf16"),
                   torch::tensor({1.0f, -2.5f, 0.15625f}).to(torch::kBFloat16));
  EXPECT_TENSOR_EQ(f.at("m_bool"), torch::tensor({true, false, true}));
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"source", "python"}}));
}

constexpr const char* kPythonChecker = R"PY(
import json, struct, sys
import numpy as np

raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
def fail(msg):
    print("MISMATCH:", msg)
    sys.exit(1)
if (8 + n) % 8 != 0:
    fail("header length %d leaves data unaligned" % n)
header = json.loads(raw[8:8 + n].decode("utf-8"))
data = raw[8 + n:]
meta = header.pop("__metadata__", None)
if meta != {"origin": "xfer", "note": "h\u00e9llo"}:
    fail("metadata %r" % (meta,))
expected = {
    "f64": ("F64", np.arange(12, dtype="<f8").reshape(3, 4) * 0.5 - 1),
    "f32_t": ("F32", np.arange(12, dtype="<f4").reshape(3, 4).T),
    "f16": ("F16", np.array([0.5, -1.25, 2048.0, 0.0], dtype="<f2")),
    "bf16": ("BF16", np.array([1.0, -2.5, 0.15625, 256.0], dtype="<f4")),
    "i64": ("I64", np.array([-2**40, -1, 0, 2**62], dtype="<i8")),
    "i32": ("I32", np.arange(-3, 3, dtype="<i4").reshape(2, 3)),
    "i16": ("I16", np.array([-32768, 32767, 5], dtype="<i2")),
    "i8": ("I8", np.array([-128, 127, 0], dtype="i1")),
    "u8": ("U8", np.array([0, 255, 128], dtype="u1")),
    "bool": ("BOOL", np.array([True, False, True, True])),
    "scalar": ("F32", np.array(3.5, dtype="<f4")),
    "empty": ("F32", np.zeros((2, 0), dtype="<f4")),
}
npdtype = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
if set(header) != set(expected):
    fail("names %r" % sorted(header))
spans = []
for name, (dt, want) in expected.items():
    e = header[name]
    if e["dtype"] != dt:
        fail("%s dtype %s" % (name, e["dtype"]))
    if list(e["shape"]) != list(want.shape):
        fail("%s shape %r" % (name, e["shape"]))
    b, end = e["data_offsets"]
    spans.append((b, end))
    got = np.frombuffer(data[b:end], dtype=npdtype[dt]).reshape(e["shape"])
    if dt == "BF16":
        got = (got.astype("<u4") << 16).view("<f4")
    if not np.array_equal(got, want):
        fail("%s values %r != %r" % (name, got, want))
spans.sort()
cursor = 0
for b, end in spans:
    if b != cursor:
        fail("gap or overlap at %d" % b)
    cursor = end
if cursor != len(data):
    fail("data is %d bytes, tensors cover %d" % (len(data), cursor))
print("OK")
)PY";

TEST(SafetensorsInteropTest, PythonReadsFileWrittenByXfer) {
  if (!have_python_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy is not available";
  TempDir dir;
  TensorFile f;
  f.add("f64", torch::arange(12, torch::kFloat64).reshape({3, 4}) * 0.5 - 1);
  f.add("f32_t", torch::arange(12, torch::kFloat32).reshape({3, 4}).t());  // non-contiguous
  f.add("f16", torch::tensor({0.5f, -1.25f, 2048.0f, 0.0f}).to(torch::kFloat16));
  f.add("bf16", torch::tensor({1.0f, -2.5f, 0.15625f, 256.0f}).to(torch::kBFloat16));
  f.add("i64", torch::tensor({-(int64_t(1) << 40), int64_t(-1), int64_t(0), int64_t(1) << 62}));
  f.add("i32", torch::arange(-3, 3, torch::kInt32).reshape({2, 3}));
  f.add("i16", torch::tensor({-32768, 32767, 5}).to(torch::kInt16));
  f.add("i8", torch::tensor({-128, 127, 0}).to(torch::kInt8));
  f.add("u8", torch::tensor({0, 255, 128}).to(torch::kUInt8));
  f.add("bool", torch::tensor({true, false, true, true}));
  f.add("scalar", torch::tensor(3.5f));
  f.add("empty", torch::zeros({2, 0}));
  f.metadata = {{"origin", "xfer"}, {"note", "h\xc3\xa9llo"}};
  write_safetensors(dir.file("x.safetensors"), f);
  write_raw(dir.file("check.py"), kPythonChecker);
  int rc = run_python(dir.file("check.py"), dir.file("x.safetensors"), dir.file("log"));
  EXPECT_EQ(rc, 0) << read_file(dir.file("log"));
}

}  // namespace
}  // namespace xfer::io
