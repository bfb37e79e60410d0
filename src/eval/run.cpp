#include "xfer/eval/run.h"

#include <iomanip>
#include <sstream>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/data/spec.h"
#include "xfer/eval/transfer.h"
#include "xfer/io/model_dir.h"

namespace xfer::eval {

EvalRunResult run_eval(const EvalRunOptions& o) {
  XFER_CHECK_USAGE(!o.data.empty(), "--data is required");
  XFER_CHECK_USAGE(o.batch_size >= 1, "--batch-size must be >= 1");
  torch::Device device = parse_device(o.device);
  if (!o.json.empty()) check_output_path_file(o.json);
  auto ds = data::load(o.data);
  io::ModelSource source = o.source;
  // Weights and TorchScript sources take their input shape from the data.
  if (source.dir.empty() && source.input_shape.empty()) {
    source.input_shape = {ds.channels(), ds.height(), ds.width()};
  }
  auto lm = io::load_model_source(source);
  io::require_classifier(lm, "xfer eval");
  const std::string model_name = lm.path;
  const auto& shape = lm.config.input_shape;
  XFER_CHECK(ds.channels() == shape[0] && ds.height() == shape[1] && ds.width() == shape[2], o.data,
             ": images are ", ds.channels(), "x", ds.height(), "x", ds.width(), " but ", model_name,
             " expects ", shape[0], "x", shape[1], "x", shape[2]);
  XFER_CHECK(ds.num_classes() <= lm.config.num_classes, o.data, ": has ", ds.num_classes(),
             " classes but ", model_name, " predicts ", lm.config.num_classes);
  // A base of classes 0-4 on data of classes 5-9 (relabelled 0-4) would print
  // an accuracy that means nothing.
  check_label_space(lm, ds, o.data, "its accuracy on them would mean nothing");
  lm.model->to(device);
  EvalRunResult r;
  r.evaluation = evaluate(*lm.model, ds, o.batch_size, device);
  r.json = Json{{"model", {{"path", model_name}, {"id", lm.card.id}, {"arch", lm.config.arch}}},
                {"data", {{"spec", o.data}, {"sha256", ds.content_hash()}}},
                {"evaluation", r.evaluation.to_json()},
                {"xfer_version", version()}};
  if (!o.json.empty() && dist::is_main()) write_json(o.json, r.json);
  return r;
}

std::string evaluation_text(const Evaluation& e) {
  std::ostringstream os;
  auto ci = wilson_interval(e.correct, e.n);
  os << std::fixed << std::setprecision(4) << "accuracy: " << e.accuracy << " (" << e.correct << "/"
     << e.n << ", 95% CI " << ci.first << "-" << ci.second << ")\n"
     << "loss:     " << e.loss << "\n"
     << "per class:\n";
  for (size_t c = 0; c < e.per_class_accuracy.size(); ++c) {
    std::string name = c < e.class_names.size() ? e.class_names[c] : std::to_string(c);
    os << "  " << std::setw(3) << c << "  " << std::left << std::setw(14) << name << std::right;
    if (e.per_class_accuracy[c] < 0) {
      os << "       -\n";
    } else {
      os << std::setw(8) << e.per_class_accuracy[c] << "\n";
    }
  }
  os << "confusion (rows: true, columns: predicted):\n";
  for (const auto& row : e.confusion) {
    os << "  ";
    for (int64_t v : row) os << std::setw(6) << v;
    os << "\n";
  }
  return os.str();
}

}  // namespace xfer::eval
