#include "xfer/data/dataset.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <torch/torch.h>

#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/core/sha256.h"

namespace xfer::data {
namespace {

std::string name_of(const Dataset& ds) { return ds.source.empty() ? "dataset" : ds.source; }

/// Positions of each class's samples, in dataset order.
std::vector<std::vector<int64_t>> positions_by_class(const Dataset& ds) {
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(ds.num_classes()));
  auto labels = ds.labels.contiguous();
  const int64_t* l = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < ds.size(); ++i) by_class[static_cast<size_t>(l[i])].push_back(i);
  return by_class;
}

torch::Tensor to_tensor(const std::vector<int64_t>& v) {
  auto t = torch::empty({static_cast<int64_t>(v.size())}, torch::kLong);
  if (!v.empty()) std::copy(v.begin(), v.end(), t.data_ptr<int64_t>());
  return t;
}

std::string class_label(const Dataset& ds, int64_t c) {
  if (c >= 0 && c < ds.num_classes()) {
    return str_cat(c, " (", ds.class_names[static_cast<size_t>(c)], ")");
  }
  return std::to_string(c);
}

}  // namespace

void Dataset::validate() const {
  const std::string name = name_of(*this);
  XFER_CHECK(images.defined() && labels.defined() && index.defined(), name,
             ": dataset is missing images, labels or index");
  XFER_CHECK(images.dim() == 4, name, ": images must be [N,C,H,W], got ", images.sizes());
  XFER_CHECK(images.scalar_type() == torch::kUInt8, name, ": images must be uint8, got ",
             images.scalar_type());
  XFER_CHECK(labels.dim() == 1 && labels.scalar_type() == torch::kLong, name,
             ": labels must be int64 [N], got ", labels.scalar_type(), " ", labels.sizes());
  XFER_CHECK(index.dim() == 1 && index.scalar_type() == torch::kLong, name,
             ": index must be int64 [N], got ", index.scalar_type(), " ", index.sizes());
  XFER_CHECK(images.size(0) == labels.size(0) && labels.size(0) == index.size(0), name,
             ": ", images.size(0), " images, ", labels.size(0), " labels and ", index.size(0),
             " index entries (expected equal counts)");
  XFER_CHECK(images.size(1) == 1 || images.size(1) == 3, name,
             ": images must have 1 or 3 channels, got ", images.size(1));
  XFER_CHECK(images.size(2) >= 1 && images.size(3) >= 1, name, ": images are ", images.size(2), "x",
             images.size(3), " pixels");
  XFER_CHECK(!class_names.empty(), name, ": no class names");
  if (labels.numel() > 0) {
    int64_t lo = labels.min().item<int64_t>();
    int64_t hi = labels.max().item<int64_t>();
    XFER_CHECK(lo >= 0 && hi < num_classes(), name, ": labels span [", lo, ", ", hi,
               "], expected [0, ", num_classes() - 1, "]");
  }
}

Dataset Dataset::select(const torch::Tensor& positions) const {
  auto pos = positions.to(torch::kLong).reshape({-1});
  if (pos.numel() > 0) {
    int64_t lo = pos.min().item<int64_t>();
    int64_t hi = pos.max().item<int64_t>();
    XFER_CHECK(lo >= 0 && hi < size(), name_of(*this), ": selected positions span [", lo, ", ",
               hi, "], dataset has ", size(), " samples");
  }
  Dataset out;
  out.images = images.index_select(0, pos).contiguous();
  out.labels = labels.index_select(0, pos).contiguous();
  out.index = index.index_select(0, pos).contiguous();
  out.class_names = class_names;
  out.source = source;
  return out;
}

torch::Tensor Dataset::float_images() const {
  return images.to(torch::kFloat).div_(255.0f);
}

std::vector<int64_t> Dataset::class_counts() const {
  std::vector<int64_t> counts(static_cast<size_t>(num_classes()), 0);
  if (size() == 0) return counts;
  auto bins = torch::bincount(labels, /*weights=*/{}, num_classes());
  auto b = bins.to(torch::kLong).contiguous();
  const int64_t* p = b.data_ptr<int64_t>();
  for (int64_t c = 0; c < std::min<int64_t>(num_classes(), b.numel()); ++c) {
    counts[static_cast<size_t>(c)] = p[c];
  }
  return counts;
}

std::string Dataset::content_hash() const {
  Sha256 h;
  auto put_shape = [&](const char* tag, const torch::Tensor& t) {
    h.update(std::string(tag));
    int64_t nd = t.dim();
    h.update(&nd, sizeof(nd));
    for (int64_t d = 0; d < nd; ++d) {
      int64_t s = t.size(d);
      h.update(&s, sizeof(s));
    }
  };
  auto imgs = images.contiguous().cpu();
  auto labs = labels.to(torch::kLong).contiguous().cpu();
  put_shape("images", imgs);
  put_shape("labels", labs);
  h.update(imgs.data_ptr<uint8_t>(), static_cast<size_t>(imgs.numel()));
  h.update(labs.data_ptr<int64_t>(), static_cast<size_t>(labs.numel()) * sizeof(int64_t));
  return h.hex_digest();
}

Dataset select_classes(const Dataset& ds, const std::vector<int64_t>& classes) {
  const std::string name = name_of(ds);
  XFER_CHECK(!classes.empty(), name, ": empty class list");
  ds.validate();
  std::set<int64_t> seen;
  std::vector<int64_t> new_label(static_cast<size_t>(ds.num_classes()), -1);
  std::vector<std::string> names;
  for (size_t i = 0; i < classes.size(); ++i) {
    int64_t c = classes[i];
    XFER_CHECK(c >= 0 && c < ds.num_classes(), name, ": class ", c,
               " does not exist (dataset has classes 0-", ds.num_classes() - 1, ")");
    XFER_CHECK(seen.insert(c).second, name, ": class ", c, " is listed twice");
    new_label[static_cast<size_t>(c)] = static_cast<int64_t>(i);
    names.push_back(ds.class_names[static_cast<size_t>(c)]);
  }
  auto labels = ds.labels.contiguous();
  const int64_t* l = labels.data_ptr<int64_t>();
  std::vector<int64_t> keep;
  std::vector<int64_t> relabel;
  for (int64_t i = 0; i < ds.size(); ++i) {
    int64_t nl = new_label[static_cast<size_t>(l[i])];
    if (nl >= 0) {
      keep.push_back(i);
      relabel.push_back(nl);
    }
  }
  Dataset out = ds.select(to_tensor(keep));
  out.labels = to_tensor(relabel);
  out.class_names = std::move(names);
  return out;
}

torch::Tensor balanced_positions(const torch::Tensor& labels, int64_t n) {
  XFER_CHECK(labels.defined() && labels.dim() == 1, "balanced_positions: labels must be 1-d");
  XFER_CHECK(n >= 0, "balanced_positions: n must be >= 0, got ", n);
  const auto lab = labels.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t total = lab.size(0);
  if (n >= total) return torch::arange(total, torch::kLong);
  std::map<int64_t, std::vector<int64_t>> by_class;
  const int64_t* p = lab.data_ptr<int64_t>();
  for (int64_t i = 0; i < total; ++i) by_class[p[i]].push_back(i);
  std::vector<const std::vector<int64_t>*> active;  // classes with samples left, ascending label
  for (const auto& [label, positions] : by_class) active.push_back(&positions);
  std::vector<int64_t> taken;
  taken.reserve(static_cast<size_t>(n));
  // Exhausted classes leave the rotation, so skewed data costs O(n), not
  // (largest class x classes).
  for (size_t round = 0; static_cast<int64_t>(taken.size()) < n; ++round) {
    std::vector<const std::vector<int64_t>*> next;
    for (const auto* positions : active) {
      if (static_cast<int64_t>(taken.size()) == n) break;
      taken.push_back((*positions)[round]);
      if (round + 1 < positions->size()) next.push_back(positions);
    }
    active.swap(next);
  }
  std::sort(taken.begin(), taken.end());
  return torch::tensor(taken, torch::kLong);
}

namespace {

/// Appends seed's draw of k positions from each class (k at most each class's
/// size, checked by the callers) to `chosen`: by class, then by position.
void draw_shots(const std::vector<std::vector<int64_t>>& by_class, int64_t k, uint64_t seed,
                std::vector<int64_t>& chosen) {
  for (size_t c = 0; c < by_class.size(); ++c) {
    const auto& pos = by_class[c];
    // One stream per class, so a class's choice does not depend on the others.
    Rng rng(seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(c) + 1);
    auto perm = permutation(static_cast<int64_t>(pos.size()), rng);
    std::vector<int64_t> mine(perm.begin(), perm.begin() + k);
    for (auto& p : mine) p = pos[static_cast<size_t>(p)];
    // Kept in dataset order within the class: the result is ordered by class,
    // then by original position.
    std::sort(mine.begin(), mine.end());
    chosen.insert(chosen.end(), mine.begin(), mine.end());
  }
}

}  // namespace

torch::Tensor shot_positions(const Dataset& ds, int64_t k, uint64_t seed) {
  const std::string name = name_of(ds);
  XFER_CHECK(k >= 1, name, ": shots must be at least 1, got ", k);
  ds.validate();
  const auto by_class = positions_by_class(ds);
  for (int64_t c = 0; c < ds.num_classes(); ++c) {
    const size_t have = by_class[static_cast<size_t>(c)].size();
    XFER_CHECK(static_cast<int64_t>(have) >= k, name, ": class ", class_label(ds, c), " has ", have,
               have == 1 ? " sample" : " samples", ", fewer than the ", k, " shots asked for");
  }
  std::vector<int64_t> chosen;
  // (k was checked against each class: it may have been far larger than the
  // data, and k times the classes may overflow; never more than every sample)
  chosen.reserve(static_cast<size_t>(ds.size()));
  draw_shots(by_class, k, seed, chosen);
  return to_tensor(chosen);
}

Dataset sample_shots(const Dataset& ds, int64_t k, uint64_t seed) {
  return ds.select(shot_positions(ds, k, seed));
}

Dataset exclude_shots(const Dataset& ds, int64_t k, const std::vector<uint64_t>& seeds) {
  const std::string name = name_of(ds);
  XFER_CHECK(!seeds.empty(), name, ": exclude_shots needs at least one seed");
  XFER_CHECK(k >= 1, name, ": the shots to exclude must be at least 1, got ", k);
  ds.validate();
  // Said here, not as shot_positions' "shots asked for": a spec may set both.
  const auto counts = ds.class_counts();
  for (size_t c = 0; c < counts.size(); ++c) {
    XFER_CHECK(counts[c] > k, name, ": exclude=", k, " would remove every sample of class ",
               class_label(ds, static_cast<int64_t>(c)), " (it has ", counts[c], ")");
  }
  // The classes' positions once for every seed (up to 256 of them).
  const auto by_class = positions_by_class(ds);
  std::vector<char> excluded(static_cast<size_t>(ds.size()), 0);
  std::vector<int64_t> drawn;
  for (uint64_t seed : seeds) {
    drawn.clear();
    draw_shots(by_class, k, seed, drawn);
    for (int64_t i : drawn) excluded[static_cast<size_t>(i)] = 1;
  }
  std::vector<int64_t> keep;
  keep.reserve(excluded.size());
  for (size_t i = 0; i < excluded.size(); ++i) {
    if (!excluded[i]) keep.push_back(static_cast<int64_t>(i));
  }
  Dataset out = ds.select(to_tensor(keep));
  // Several seeds' draws can together cover a class that one draw leaves samples of.
  const auto left = out.class_counts();
  for (size_t c = 0; c < left.size(); ++c) {
    XFER_CHECK(left[c] > 0, name, ": exclude=", k, " under ", seeds.size(),
               " seeds removes every sample of class ", class_label(ds, static_cast<int64_t>(c)),
               " (it has ", counts[c], ")");
  }
  return out;
}

Dataset limit_balanced(const Dataset& ds, int64_t n) {
  XFER_CHECK(n >= 0, name_of(ds), ": a limit must be >= 0, got ", n);
  if (n == 0 || n >= ds.size()) return ds;
  return ds.select(balanced_positions(ds.labels, n));
}

void check_same_task(const Dataset& other, const Dataset& reference) {
  const auto a = other.images.sizes().slice(1), b = reference.images.sizes().slice(1);
  XFER_CHECK(a == b, name_of(other), ": images are ", a, " but ", name_of(reference), "'s are ", b);
  const auto& x = other.class_names;
  const auto& y = reference.class_names;
  if (x == y) return;
  size_t i = 0;
  while (i < x.size() && i < y.size() && x[i] == y[i]) ++i;
  XFER_CHECK(false, name_of(other), ": its classes are not those of ", name_of(reference), " (",
             x.size() == y.size() ? "" : str_cat(x.size(), " against ", y.size(), "; "), "label ",
             i, " is ", i < x.size() ? "'" + x[i] + "'" : std::string("missing"), ", not ",
             i < y.size() ? "'" + y[i] + "'" : std::string("a class"),
             "): a label would name another class");
}

std::pair<Dataset, Dataset> stratified_split(const Dataset& ds, double val_fraction,
                                             uint64_t seed) {
  const std::string name = name_of(ds);
  XFER_CHECK(val_fraction >= 0.0 && val_fraction < 1.0, name,
             ": validation fraction must be in [0, 1), got ", val_fraction);
  ds.validate();
  auto by_class = positions_by_class(ds);
  std::vector<int64_t> train, val;
  for (int64_t c = 0; c < ds.num_classes(); ++c) {
    const auto& pos = by_class[static_cast<size_t>(c)];
    int64_t n = static_cast<int64_t>(pos.size());
    int64_t nv = static_cast<int64_t>(std::llround(val_fraction * static_cast<double>(n)));
    if (val_fraction > 0 && n >= 2) nv = std::max<int64_t>(nv, 1);
    nv = std::min(nv, n > 0 ? n - 1 : 0);  // keep at least one training sample
    Rng rng(seed * 0xbf58476d1ce4e5b9ULL + static_cast<uint64_t>(c) + 1);
    auto perm = permutation(n, rng);
    std::vector<int64_t> v, t;
    for (int64_t i = 0; i < n; ++i) {
      (i < nv ? v : t).push_back(pos[static_cast<size_t>(perm[static_cast<size_t>(i)])]);
    }
    std::sort(v.begin(), v.end());
    std::sort(t.begin(), t.end());
    val.insert(val.end(), v.begin(), v.end());
    train.insert(train.end(), t.begin(), t.end());
  }
  std::sort(train.begin(), train.end());
  std::sort(val.begin(), val.end());
  return {ds.select(to_tensor(train)), ds.select(to_tensor(val))};
}

Stats compute_stats(const Dataset& ds) {
  XFER_CHECK(ds.size() > 0, name_of(ds), ": cannot compute statistics of an empty dataset");
  Stats s;
  const int64_t chunk = 4096;
  int64_t channels = ds.channels();
  std::vector<double> sum(static_cast<size_t>(channels), 0.0);
  std::vector<double> sq(static_cast<size_t>(channels), 0.0);
  for (int64_t start = 0; start < ds.size(); start += chunk) {
    int64_t len = std::min(chunk, ds.size() - start);
    auto x = ds.images.narrow(0, start, len).to(torch::kDouble).div_(255.0);
    auto s1 = x.sum({0, 2, 3});
    auto s2 = x.pow(2).sum({0, 2, 3});
    for (int64_t c = 0; c < channels; ++c) {
      sum[static_cast<size_t>(c)] += s1[c].item<double>();
      sq[static_cast<size_t>(c)] += s2[c].item<double>();
    }
  }
  double count = static_cast<double>(ds.size() * ds.height() * ds.width());
  for (int64_t c = 0; c < channels; ++c) {
    double m = sum[static_cast<size_t>(c)] / count;
    double var = std::max(0.0, sq[static_cast<size_t>(c)] / count - m * m);
    s.mean.push_back(m);
    s.std.push_back(std::sqrt(var));
  }
  return s;
}

std::pair<double, double> value_range(const Dataset& ds) {
  XFER_CHECK(ds.size() > 0, name_of(ds), ": cannot compute the value range of an empty dataset");
  double lo = ds.images.min().item<int64_t>() / 255.0;
  double hi = ds.images.max().item<int64_t>() / 255.0;
  return {lo, hi};
}

}  // namespace xfer::data
