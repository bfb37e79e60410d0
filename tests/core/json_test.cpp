#include "xfer/core/json.h"

#include <ctime>
#include <functional>
#include <filesystem>
#include <fstream>
#include <regex>

#include "support/support.h"
#include "xfer/core/fs.h"

namespace fs = std::filesystem;

namespace xfer {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no xfer::Error thrown>";
}

TEST(JsonTest, WriteReadRoundTrip) {
  testing::TempDir dir;
  Json j = {{"name", "model \"x\" \xc3\xa9"},
            {"n", 42},
            {"big", int64_t{9007199254740993}},
            {"neg", -17},
            {"pi", 3.141592653589793},
            {"flag", true},
            {"none", nullptr},
            {"list", {1, 2, 3}},
            {"nested", {{"a", {{"b", "c"}}}, {"empty_obj", Json::object()}}},
            {"empty_arr", Json::array()}};
  const std::string path = dir.file("x.json");
  write_json(path, j);
  Json back = read_json(path);
  EXPECT_EQ(back, j);
  EXPECT_EQ(back["big"].get<int64_t>(), 9007199254740993);
  EXPECT_DOUBLE_EQ(back["pi"].get<double>(), 3.141592653589793);
}

TEST(JsonTest, WriteIsIndentedWithTrailingNewline) {
  testing::TempDir dir;
  const std::string path = dir.file("x.json");
  write_json(path, Json{{"a", 1}, {"b", {1, 2}}});
  std::string text = read_file(path);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_NE(text.find("\n  \"a\": 1"), std::string::npos) << text;
  // Atomic: only the file itself in the folder.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(JsonTest, WriteReplacesExisting) {
  testing::TempDir dir;
  const std::string path = dir.file("x.json");
  write_json(path, Json{{"v", 1}});
  write_json(path, Json{{"v", 2}});
  EXPECT_EQ(read_json(path)["v"].get<int>(), 2);
}

TEST(JsonTest, InvalidJsonErrorNamesFile) {
  testing::TempDir dir;
  const std::string path = dir.file("bad.json");
  {
    std::ofstream out(path);
    out << "{\"a\": 1,, }";
  }
  std::string msg = error_of([&] { read_json(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "message should be one line: " << msg;
}

TEST(JsonTest, EmptyAndTruncatedFilesAreErrors) {
  testing::TempDir dir;
  for (const std::string text : {"", "{\"a\": [1, 2", "nul"}) {
    const std::string path = dir.file("t.json");
    {
      std::ofstream out(path);
      out << text;
    }
    std::string msg = error_of([&] { read_json(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << "text '" << text << "': " << msg;
  }
}

TEST(JsonTest, MissingFileErrorNamesFile) {
  testing::TempDir dir;
  const std::string path = dir.file("missing.json");
  std::string msg = error_of([&] { read_json(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(JsonTest, WriteIntoMissingFolderThrows) {
  testing::TempDir dir;
  EXPECT_THROW(write_json(dir.file("no/x.json"), Json::object()), Error);
}

TEST(JsonTest, JsonGetReturnsTypedValues) {
  Json j = {{"s", "hi"}, {"i", 7}, {"d", 2.5}, {"b", false}, {"v", {1, 2, 3}}};
  EXPECT_EQ(json_get<std::string>(j, "s", "cfg"), "hi");
  EXPECT_EQ(json_get<int64_t>(j, "i", "cfg"), 7);
  EXPECT_DOUBLE_EQ(json_get<double>(j, "d", "cfg"), 2.5);
  EXPECT_FALSE(json_get<bool>(j, "b", "cfg"));
  EXPECT_EQ(json_get<std::vector<int>>(j, "v", "cfg"), (std::vector<int>{1, 2, 3}));
}

TEST(JsonTest, JsonGetMissingFieldMessage) {
  Json j = {{"a", 1}};
  EXPECT_EQ(error_of([&] { json_get<int>(j, "b", "config.json"); }),
            "config.json: missing field 'b'");
  // A non-object has no fields.
  EXPECT_EQ(error_of([&] { json_get<int>(Json::array({1}), "b", "w"); }), "w: missing field 'b'");
  EXPECT_EQ(error_of([&] { json_get<int>(Json(5), "b", "w"); }), "w: missing field 'b'");
}

TEST(JsonTest, JsonGetWrongTypeMessage) {
  Json j = {{"s", "text"}, {"n", 3}, {"v", {1, "x"}}};
  std::string msg = error_of([&] { json_get<int>(j, "s", "card.json"); });
  EXPECT_NE(msg.find("card.json: field 's' has the wrong type"), std::string::npos) << msg;
  EXPECT_NE(msg.find("string"), std::string::npos) << msg;
  msg = error_of([&] { json_get<std::string>(j, "n", "card.json"); });
  EXPECT_NE(msg.find("field 'n' has the wrong type"), std::string::npos) << msg;
  EXPECT_NE(msg.find("number"), std::string::npos) << msg;
  msg = error_of([&] { json_get<std::vector<int>>(j, "v", "w"); });
  EXPECT_NE(msg.find("field 'v' has the wrong type"), std::string::npos) << msg;
}

TEST(JsonTest, JsonGetIntegersMustBeIntegersInRange) {
  // nlohmann alone truncates 3.7 to 3 and casts 1e60 (undefined behaviour).
  Json j = {{"f", 3.7},         {"huge", 1e60},     {"big", uint64_t{1} << 63}, {"neg", -1},
            {"i32max", 2147483647}, {"list", {10, 2.5}}, {"ok", {1, 2}},          {"whole", 3.0}};
  std::string msg = error_of([&] { json_get<int64_t>(j, "f", "cfg.json"); });
  EXPECT_EQ(msg, "cfg.json: field 'f' must be an integer in range, got 3.7");
  EXPECT_NE(error_of([&] { json_get<int64_t>(j, "huge", "w"); }).find("field 'huge' must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { json_get<int64_t>(j, "big", "w"); }).find("must be an integer"), std::string::npos);
  EXPECT_EQ(json_get<uint64_t>(j, "big", "w"), uint64_t{1} << 63);
  EXPECT_NE(error_of([&] { json_get<uint32_t>(j, "neg", "w"); }).find("must be an integer"), std::string::npos);
  EXPECT_EQ(json_get<int32_t>(j, "i32max", "w"), 2147483647);
  EXPECT_NE(error_of([&] { json_get<int16_t>(j, "i32max", "w"); }).find("must be an integer"), std::string::npos);
  // 3.0 is a float in JSON's eyes: an integer field wants 3.
  EXPECT_NE(error_of([&] { json_get<int>(j, "whole", "w"); }).find("must be an integer"), std::string::npos);
  msg = error_of([&] { json_get<std::vector<int64_t>>(j, "list", "w"); });
  EXPECT_EQ(msg, "w: field 'list' must be a list of integers in range, got [10,2.5]");
  EXPECT_EQ(json_get<std::vector<int64_t>>(j, "ok", "w"), (std::vector<int64_t>{1, 2}));
  // Floating fields still take integers and floats alike.
  EXPECT_DOUBLE_EQ(json_get<double>(j, "neg", "w"), -1.0);
  EXPECT_EQ(json_get<std::vector<double>>(j, "list", "w"), (std::vector<double>{10, 2.5}));
  // Present but not an integer is an error with a default too.
  EXPECT_NE(error_of([&] { json_get_or<int>(j, "f", 1, "w"); }).find("must be an integer"), std::string::npos);
}

TEST(JsonTest, JsonGetOrDefaults) {
  Json j = {{"present", 5}, {"null", nullptr}, {"s", "x"}};
  EXPECT_EQ(json_get_or<int>(j, "present", 9, "w"), 5);
  EXPECT_EQ(json_get_or<int>(j, "absent", 9, "w"), 9);
  EXPECT_EQ(json_get_or<int>(j, "null", 9, "w"), 9);
  EXPECT_EQ(json_get_or<std::string>(j, "absent", "dflt", "w"), "dflt");
  EXPECT_EQ(json_get_or<int>(Json::array(), "present", 4, "w"), 4);
  EXPECT_EQ(json_get_or<std::vector<double>>(j, "absent", {1.5}, "w"), std::vector<double>{1.5});
  // Present with the wrong type is still an error, not the default.
  std::string msg = error_of([&] { json_get_or<int>(j, "s", 1, "w"); });
  EXPECT_NE(msg.find("w: field 's' has the wrong type"), std::string::npos) << msg;
}

TEST(JsonTest, UtcTimestampFormat) {
  std::time_t before = std::time(nullptr);
  std::string ts = utc_timestamp();
  std::time_t after = std::time(nullptr);
  std::regex iso(R"((\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z)");
  std::smatch m;
  ASSERT_TRUE(std::regex_match(ts, m, iso)) << ts;
  std::tm tm{};
  tm.tm_year = std::stoi(m[1]) - 1900;
  tm.tm_mon = std::stoi(m[2]) - 1;
  tm.tm_mday = std::stoi(m[3]);
  tm.tm_hour = std::stoi(m[4]);
  tm.tm_min = std::stoi(m[5]);
  tm.tm_sec = std::stoi(m[6]);
  std::time_t parsed = timegm(&tm);  // UTC, so no local-time offset is allowed
  EXPECT_GE(parsed, before);
  EXPECT_LE(parsed, after);
}

}  // namespace
}  // namespace xfer
