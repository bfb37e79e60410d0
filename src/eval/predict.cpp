#include "xfer/eval/predict.h"

#include <algorithm>
#include <filesystem>

#include "xfer/core/dist.h"
#include "xfer/core/error.h"
#include "xfer/core/runtime.h"
#include "xfer/data/image_folder.h"
#include "xfer/eval/metrics.h"

namespace fs = std::filesystem;

namespace xfer::eval {
namespace {

bool has_image_extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), ::tolower);
  return e == ".png" || e == ".jpg" || e == ".jpeg";
}

}  // namespace

torch::Tensor read_input_images(const std::string& input, int64_t channels,
                                std::vector<std::string>* files) {
  std::error_code ec;
  XFER_CHECK(fs::exists(input, ec), input, ": no such file or folder");
  if (fs::is_regular_file(input, ec) && fs::path(input).extension() == ".safetensors") {
    auto f = io::read_safetensors(input);
    XFER_CHECK(f.contains("images"), input, ": no tensor named 'images'");
    auto x = f.at("images");
    XFER_CHECK(x.dim() == 4, input, ": 'images' must be NxCxHxW, got ", x.sizes());
    XFER_CHECK(x.scalar_type() == torch::kFloat, input, ": 'images' must be F32, got ",
               x.scalar_type());
    XFER_CHECK(x.size(0) >= 1, input, ": 'images' is empty");
    XFER_CHECK(torch::isfinite(x).all().item<bool>(), input, ": 'images' holds NaN or inf");
    XFER_CHECK(x.min().item<double>() >= 0 && x.max().item<double>() <= 1, input,
               ": 'images' values must lie in [0,1]");
    return x;
  }
  std::vector<std::string> paths;
  if (fs::is_directory(input, ec)) {
    for (const auto& e : fs::directory_iterator(input)) {
      if (e.is_regular_file() && has_image_extension(e.path())) paths.push_back(e.path().string());
    }
    std::sort(paths.begin(), paths.end());
    XFER_CHECK(!paths.empty(), input, ": folder holds no .png/.jpg/.jpeg image");
  } else {
    XFER_CHECK(has_image_extension(input), input,
               ": expected a .safetensors file, a PNG/JPEG image or a folder of images");
    paths.push_back(input);
  }
  std::vector<torch::Tensor> imgs;
  for (const auto& p : paths) {
    auto img = data::read_image(p, channels);
    if (!imgs.empty()) {
      XFER_CHECK(img.sizes() == imgs.front().sizes(), p, ": size ", img.sizes(),
                 " differs from the first image's ", imgs.front().sizes());
    }
    imgs.push_back(img);
  }
  if (files) *files = paths;
  return torch::stack(imgs).to(torch::kFloat) / 255.0;
}

PredictResult run_predict(PredictOptions o) {
  XFER_CHECK_USAGE(!o.input.empty(), "--input is required");
  XFER_CHECK_USAGE(!o.out.empty(), "--out is required");
  XFER_CHECK_USAGE(o.batch_size >= 1, "--batch-size must be >= 1");
  torch::Device device = parse_device(o.device);
  check_output_path_file(o.out);
  PredictResult r;
  // For weights and TorchScript sources the input shape comes from the input.
  torch::Tensor x;
  if (o.source.dir.empty() && o.source.input_shape.empty()) {
    x = read_input_images(o.input, 0, &r.files);
    o.source.input_shape = {x.size(1), x.size(2), x.size(3)};
  }
  auto lm = io::load_model_source(o.source);
  io::require_classifier(lm, "xfer predict");
  const auto& shape = lm.config.input_shape;
  if (!x.defined()) x = read_input_images(o.input, shape[0], &r.files);
  XFER_CHECK(x.size(1) == shape[0] && x.size(2) == shape[1] && x.size(3) == shape[2], o.input,
             ": images are ", x.size(1), "x", x.size(2), "x", x.size(3), " but the model expects ",
             shape[0], "x", shape[1], "x", shape[2]);
  lm.model->to(device);
  r.logits = predict_logits(*lm.model, x, o.batch_size, device).to(torch::kFloat);
  r.probabilities = torch::softmax(r.logits, 1);
  r.predictions = r.logits.argmax(1);
  r.model_id = lm.card.id;
  io::TensorFile out;
  out.add("logits", r.logits);
  out.add("probabilities", r.probabilities);
  out.add("predictions", r.predictions);
  out.metadata["model_id"] = lm.card.id;
  out.metadata["model"] = lm.path;
  out.metadata["class_names"] = Json(lm.config.class_names).dump();
  if (!r.files.empty()) out.metadata["files"] = Json(r.files).dump();
  if (dist::is_main()) io::write_safetensors(o.out, out);
  return r;
}

}  // namespace xfer::eval
