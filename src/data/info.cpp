#include "xfer/data/info.h"

#include <iomanip>
#include <sstream>

namespace xfer::data {

Json describe(const Dataset& ds) {
  ds.validate();
  auto counts = ds.class_counts();
  Json classes = Json::array();
  for (int64_t c = 0; c < ds.num_classes(); ++c) {
    classes.push_back({{"label", c}, {"name", ds.class_names[c]}, {"count", counts[c]}});
  }
  auto range = value_range(ds);
  auto stats = compute_stats(ds);
  return Json{{"source", ds.source},
              {"samples", ds.size()},
              {"shape", {ds.channels(), ds.height(), ds.width()}},
              {"num_classes", ds.num_classes()},
              {"classes", classes},
              {"value_range", {range.first, range.second}},
              {"mean", stats.mean},
              {"std", stats.std},
              {"sha256", ds.content_hash()}};
}

std::string describe_text(const Json& info) {
  std::ostringstream os;
  const auto& shape = info["shape"];
  os << "data:     " << info["source"].get<std::string>() << "\n"
     << "samples:  " << info["samples"].get<int64_t>() << "\n"
     << "shape:    " << shape[0] << "x" << shape[1] << "x" << shape[2] << " (CxHxW), uint8\n"
     << std::setprecision(4) << "range:    [" << info["value_range"][0].get<double>() << ", "
     << info["value_range"][1].get<double>() << "] after scaling to [0,1]\n"
     << "mean/std: ";
  for (size_t c = 0; c < info["mean"].size(); ++c) {
    os << (c ? ", " : "") << info["mean"][c].get<double>() << "/" << info["std"][c].get<double>();
  }
  os << "\nclasses:  " << info["num_classes"].get<int64_t>() << "\n";
  for (const auto& c : info["classes"]) {
    os << "  " << std::setw(3) << c["label"].get<int64_t>() << "  " << std::left << std::setw(14)
       << c["name"].get<std::string>() << std::right << std::setw(8) << c["count"].get<int64_t>()
       << "\n";
  }
  os << "sha256:   " << info["sha256"].get<std::string>() << "\n";
  return os.str();
}

}  // namespace xfer::data
