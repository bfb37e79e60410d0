#include "xfer/data/spec.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>

#include <torch/torch.h>

#include "xfer/core/error.h"
#include "xfer/core/parse.h"
#include "xfer/data/idx.h"
#include "xfer/data/image_folder.h"

namespace fs = std::filesystem;

namespace xfer::data {
namespace {

constexpr const char* kForms =
    "fashion-mnist[:train|:test][:classes=A-B][:exclude=K@SEEDS][:shots=K][:seed=S], "
    "idx:IMAGES,LABELS[:...] or folder:PATH[:size=N][:channels=C][:...]";

std::vector<std::string> split_on(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    if (pos == std::string::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t");
  return s.substr(a, b - a + 1);
}

[[noreturn]] void bad(const std::string& text, const std::string& part, const std::string& why) {
  throw UsageError(str_cat("data spec '", text, "': ", part.empty() ? "" : "'" + part + "': ",
                           why));
}

/// Non-negative decimal integer, no sign, no spaces.
uint64_t parse_uint(const std::string& text, const std::string& part, const std::string& value,
                    uint64_t max = std::numeric_limits<uint64_t>::max()) {
  if (value.empty()) bad(text, part, "expected a number");
  uint64_t v = 0;
  for (char ch : value) {
    if (ch < '0' || ch > '9') bad(text, part, "expected a non-negative integer");
    uint64_t d = static_cast<uint64_t>(ch - '0');
    if (v > (max - d) / 10) bad(text, part, str_cat("number too large (at most ", max, ")"));
    v = v * 10 + d;
  }
  return v;
}

/// A list of ids such as 5-9 or 0,2,4 (`what` names them in errors): at most
/// `max_value` each and `max_count` in all, none twice, in the given order.
std::vector<uint64_t> parse_id_list(const std::string& text, const std::string& part,
                                    const std::string& value, const char* what, uint64_t max_value,
                                    size_t max_count) {
  std::vector<uint64_t> out;
  std::set<uint64_t> seen;
  if (trim(value).empty())
    bad(text, part, str_cat("empty ", what, " list (expected e.g. 5-9 or 0,2,4)"));
  for (const auto& raw : split_on(value, ',')) {
    std::string item = trim(raw);
    if (item.empty())
      bad(text, part, str_cat("empty item in ", what, " list (expected e.g. 5-9 or 0,2,4)"));
    size_t dash = item.find('-');
    uint64_t lo, hi;
    if (dash == std::string::npos) {
      lo = hi = parse_uint(text, part, item, max_value);
    } else {
      lo = parse_uint(text, part, trim(item.substr(0, dash)), max_value);
      hi = parse_uint(text, part, trim(item.substr(dash + 1)), max_value);
      if (hi < lo) bad(text, part, str_cat("range ", item, " is descending (expected A-B, A <= B)"));
    }
    // Checked before expanding, so a range like 0-10^18 costs nothing.
    if (hi - lo >= max_count - out.size()) {
      bad(text, part, str_cat("more than ", max_count, " ", what, "s listed"));
    }
    for (uint64_t c = lo;; ++c) {
      if (!seen.insert(c).second) bad(text, part, str_cat(what, " ", c, " is listed twice"));
      out.push_back(c);
      if (c == hi) break;
    }
  }
  return out;
}

std::vector<int64_t> parse_classes(const std::string& text, const std::string& part,
                                   const std::string& value) {
  // 65 536 class ids are plenty (ImageNet-21k has 21 841) and keep a range like
  // 0-899999 from costing seconds (fuzz/run data_spec).
  constexpr uint64_t kMaxClass = 1u << 16;
  const auto ids = parse_id_list(text, part, value, "class", kMaxClass, kMaxClass + 1);
  return std::vector<int64_t>(ids.begin(), ids.end());
}

template <typename Int>
std::string id_list_str(const std::vector<Int>& classes) {
  std::string out;
  size_t i = 0;
  while (i < classes.size()) {
    size_t j = i;
    while (j + 1 < classes.size() && classes[j] != std::numeric_limits<Int>::max() &&
           classes[j + 1] == classes[j] + 1) {
      ++j;
    }
    if (!out.empty()) out += ",";
    out += std::to_string(classes[i]);
    if (j > i) out += "-" + std::to_string(classes[j]);
    i = j + 1;
  }
  return out;
}

}  // namespace

std::string fashion_mnist_dir() {
  const char* env = std::getenv("XFER_FASHION_MNIST_DIR");
  if (env != nullptr && *env != '\0') return env;
  return "/usr/share/datasets/fashion-mnist";
}

const std::vector<std::string>& fashion_mnist_classes() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                                 "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                                 "Bag",         "Ankle boot"};
  return names;
}

DataSpec DataSpec::parse(const std::string& text) {
  if (trim(text).empty()) bad(text, "", str_cat("empty (expected ", kForms, ")"));
  // The SPEC goes into every card.json and results file (JSON: UTF-8 only).
  if (!is_utf8(text)) bad(text, "", "not valid UTF-8 (rename the files or folders it names)");
  auto parts = split_on(text, ':');
  DataSpec spec;
  const std::string kind = parts[0];
  size_t first_mod = 1;
  if (kind == "fashion-mnist") {
    spec.kind = Kind::kFashionMnist;
  } else if (kind == "idx") {
    spec.kind = Kind::kIdx;
    if (parts.size() < 2 || parts[1].empty()) {
      bad(text, kind, "expected idx:IMAGES,LABELS");
    }
    auto files = split_on(parts[1], ',');
    if (files.size() != 2 || files[0].empty() || files[1].empty()) {
      bad(text, parts[1], "expected two files, IMAGES,LABELS");
    }
    spec.paths = files;
    first_mod = 2;
  } else if (kind == "folder") {
    spec.kind = Kind::kFolder;
    if (parts.size() < 2 || parts[1].empty()) bad(text, kind, "expected folder:PATH");
    spec.paths = {parts[1]};
    first_mod = 2;
  } else {
    bad(text, kind, str_cat("unknown data source (expected ", kForms, ")"));
  }

  std::set<std::string> seen;
  for (size_t i = first_mod; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part.empty()) bad(text, part, "empty modifier (stray ':')");
    size_t eq = part.find('=');
    std::string key = eq == std::string::npos ? part : part.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : part.substr(eq + 1);
    bool is_split = (part == "train" || part == "test");
    std::string slot = is_split ? "split" : key;
    if (!seen.insert(slot).second) bad(text, part, str_cat("'", slot, "' given twice"));
    if (is_split) {
      if (spec.kind != Kind::kFashionMnist) {
        bad(text, part, "train/test applies only to fashion-mnist");
      }
      spec.split = part;
      continue;
    }
    if (eq == std::string::npos) {
      bad(text, part,
          spec.kind == Kind::kFashionMnist
              ? "unknown modifier (expected train, test, classes=, exclude=, shots= or seed=)"
              : "unknown modifier (expected key=value)");
    }
    if (key == "classes") {
      spec.classes = parse_classes(text, part, value);
    } else if (key == "shots") {
      auto k = parse_uint(text, part, value, uint64_t(1) << 40);
      if (k < 1) bad(text, part, "shots must be at least 1");
      spec.shots = static_cast<int64_t>(k);
    } else if (key == "seed") {
      spec.seed = parse_uint(text, part, value);
    } else if (key == "exclude") {
      // exclude=K@SEEDS: without the samples of the shots=K draws of those seeds.
      const size_t at = value.find('@');
      if (at == std::string::npos)
        bad(text, part, "expected exclude=K@SEEDS, e.g. exclude=100@0-2");
      auto k = parse_uint(text, part, value.substr(0, at), uint64_t(1) << 40);
      if (k < 1) bad(text, part, "the shots to exclude must be at least 1");
      spec.exclude_shots = static_cast<int64_t>(k);
      // Each seed is a shuffle of every class: 256 keep a spec cheap to load.
      spec.exclude_seeds = parse_id_list(text, part, value.substr(at + 1), "seed",
                                         std::numeric_limits<uint64_t>::max(), 256);
      // A set of seeds: sorted, so that 2,1 and 1-2 are one spec (and one cache key).
      std::sort(spec.exclude_seeds.begin(), spec.exclude_seeds.end());
    } else if (key == "size" && spec.kind == Kind::kFolder) {
      // The cap of --image-size: larger sizes overflow the resizer's int offsets.
      auto n = parse_uint(text, part, value, 4096);
      if (n < 1) bad(text, part, "size must be at least 1");
      spec.image_size = static_cast<int64_t>(n);
    } else if (key == "channels" && spec.kind == Kind::kFolder) {
      auto c = parse_uint(text, part, value, 1000);
      if (c != 1 && c != 3) bad(text, part, "channels must be 1 or 3");
      spec.channels = static_cast<int64_t>(c);
    } else {
      bad(text, part,
          spec.kind == Kind::kFolder
              ? "unknown key (expected classes, exclude, shots, seed, size or channels)"
              : "unknown key (expected classes, exclude, shots or seed)");
    }
  }
  return spec;
}

std::string DataSpec::str() const {
  std::string out;
  switch (kind) {
    case Kind::kFashionMnist:
      out = "fashion-mnist:" + split;
      break;
    case Kind::kIdx:
      out = "idx:" + (paths.size() > 0 ? paths[0] : "") + "," + (paths.size() > 1 ? paths[1] : "");
      break;
    case Kind::kFolder:
      out = "folder:" + (paths.empty() ? std::string() : paths[0]);
      if (image_size > 0) out += ":size=" + std::to_string(image_size);
      if (channels > 0) out += ":channels=" + std::to_string(channels);
      break;
  }
  if (!classes.empty()) out += ":classes=" + id_list_str(classes);
  if (exclude_shots)
    out += ":exclude=" + std::to_string(*exclude_shots) + "@" + id_list_str(exclude_seeds);
  if (shots) out += ":shots=" + std::to_string(*shots);
  if (seed != 0) out += ":seed=" + std::to_string(seed);
  return out;
}

std::string with_image_size(const std::string& text, int64_t size) {
  if (size == 0) return text;
  XFER_CHECK_USAGE(size > 0 && size <= 4096, "--image-size must be in [1, 4096], got ", size);
  DataSpec spec = DataSpec::parse(text);
  XFER_CHECK_USAGE(spec.kind == DataSpec::Kind::kFolder,
                   "--image-size applies to folder: specs only, not '", text, "'");
  spec.image_size = size;
  return spec.str();
}

Dataset load(const DataSpec& spec) {
  const std::string text = spec.str();
  Dataset ds;
  switch (spec.kind) {
    case DataSpec::Kind::kFashionMnist: {
      XFER_CHECK(spec.split == "train" || spec.split == "test", text,
                 ": split must be train or test, got '", spec.split, "'");
      std::string dir = fashion_mnist_dir();
      std::string prefix = dir + "/" + (spec.split == "train" ? "train" : "t10k");
      std::string images = prefix + "-images-idx3-ubyte.gz";
      std::string labels = prefix + "-labels-idx1-ubyte.gz";
      std::error_code ec;
      for (const auto& file : {images, labels}) {
        XFER_CHECK(fs::exists(file, ec), text, ": ", file,
                   " not found (install the Debian package dataset-fashion-mnist, or set "
                   "XFER_FASHION_MNIST_DIR to a folder holding the Fashion-MNIST .gz files)");
      }
      ds = read_idx_pair(images, labels, fashion_mnist_classes());
      break;
    }
    case DataSpec::Kind::kIdx:
      XFER_CHECK(spec.paths.size() == 2, text, ": expected idx:IMAGES,LABELS");
      ds = read_idx_pair(spec.paths[0], spec.paths[1]);
      break;
    case DataSpec::Kind::kFolder: {
      XFER_CHECK(spec.paths.size() == 1, text, ": expected folder:PATH");
      ImageFolderOptions opt;
      opt.image_size = spec.image_size;
      opt.channels = spec.channels;
      ds = read_image_folder(spec.paths[0], opt);
      break;
    }
  }
  ds.source = text;
  if (!spec.classes.empty()) {
    for (int64_t c : spec.classes) {
      XFER_CHECK(c >= 0 && c < ds.num_classes(), text, ": class ", c,
                 " does not exist (the data has classes 0-", ds.num_classes() - 1, ")");
    }
    ds = select_classes(ds, spec.classes);
  }
  if (spec.exclude_shots) ds = exclude_shots(ds, *spec.exclude_shots, spec.exclude_seeds);
  if (spec.shots) ds = sample_shots(ds, *spec.shots, spec.seed);
  ds.validate();
  return ds;
}

Dataset load(const std::string& text) { return load(DataSpec::parse(text)); }

}  // namespace xfer::data
