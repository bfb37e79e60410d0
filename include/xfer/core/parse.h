#pragma once
/// \file
/// Whole-string number parsing for flags and spec strings: one place that
/// rejects trailing garbage, empty text and non-finite values with a
/// xfer::UsageError naming the flag.

#include <cstdint>
#include <string>
#include <vector>

namespace xfer {

/// A whole string as a 64-bit integer. Throws "WHAT: 'TEXT' is not an integer".
int64_t parse_integer(const std::string& text, const std::string& what);

/// A whole string as a finite double. Throws "WHAT: 'TEXT' is not a number".
double parse_number(const std::string& text, const std::string& what);

/// A number or a fraction "A/B" (budgets: "8/255", "0.03", "1e-2").
double parse_fraction(const std::string& text, const std::string& what);

/// Splits on `sep`, keeping empty fields ("a,,b" -> {"a", "", "b"}).
std::vector<std::string> split(const std::string& text, char sep);

/// A comma list of fractions ("0.05,8/255"); empty fields are refused.
std::vector<double> parse_fraction_list(const std::string& text, const std::string& what);

/// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or code
/// points past U+10FFFF): what JSON output can hold. Paths and folder names
/// are checked with it where they are read, not when a card.json is written
/// after a whole training run.
bool is_utf8(const std::string& text);

}  // namespace xfer
