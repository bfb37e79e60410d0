#pragma once
// Assertions on xfer::Error messages, shared by the tests of the readers.

#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "xfer/core/error.h"

namespace xfer::testing {

/// Expects `fn` to throw xfer::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error_containing(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected xfer::Error";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) {
      EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    }
  }
}

/// Expects `fn` to throw xfer::Error whose message names `needle` (a file, key or value).
template <typename Fn>
void expect_error_naming(Fn fn, const std::string& needle) {
  expect_error_containing(fn, {needle});
}

}  // namespace xfer::testing
