// The sanitizer job is only worth its CI time if a report actually fails a
// test: these prove, in the sanitizer build, that a heap overflow, undefined
// behaviour and a leak each kill the process. Skipped in ordinary builds.
#include <gtest/gtest.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

volatile int g_sink = 0;

#if defined(XFER_SANITIZE_ADDRESS)
TEST(SanitizerTest, HeapOverflowIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        // Through memset (ASan's interceptor), not an indexed store, which
        // UBSan's object-size check would report first.
        char* p = new char[4];
        volatile size_t n = 5;
        std::memset(p, 1, n);
        g_sink = p[0];
        delete[] p;
      },
      "heap-buffer-overflow");
}

TEST(SanitizerTest, LeakIsFatalAtExit) {
  const char* opts = std::getenv("ASAN_OPTIONS");
  if (opts != nullptr && std::string(opts).find("detect_leaks=0") != std::string::npos) {
    GTEST_SKIP() << "leak detection switched off in ASAN_OPTIONS";
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        volatile char* leaked = new char[64];
        leaked[0] = 1;
        leaked = nullptr;
        std::exit(0);
      },
      "LeakSanitizer");
}
#else
TEST(SanitizerTest, HeapOverflowIsFatal) { GTEST_SKIP() << "not built with XFER_SANITIZE=address"; }
#endif

#if defined(XFER_SANITIZE_UNDEFINED)
TEST(SanitizerTest, SignedOverflowIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        volatile int a = INT_MAX;
        g_sink = a + 1;
      },
      "signed integer overflow");
}
#else
TEST(SanitizerTest, SignedOverflowIsFatal) { GTEST_SKIP() << "not built with XFER_SANITIZE=undefined"; }
#endif

}  // namespace
