#pragma once
/// \file
/// `xfer predict`: logits and probabilities of any model source on images
/// given as safetensors (`images`, float32 NxCxHxW in [0,1]), one PNG/JPEG
/// file, or a folder of them (sorted by name).

#include <string>

#include "xfer/io/import.h"

namespace xfer::eval {

struct PredictOptions {
  io::ModelSource source;
  std::string input;
  std::string out;  ///< safetensors: logits, probabilities (F32 [N,K]), predictions (I64 [N])
  int64_t batch_size = 256;
  std::string device = "cpu";
};

struct PredictResult {
  torch::Tensor logits, probabilities, predictions;
  std::string model_id;
  std::vector<std::string> files;  ///< image files, in row order, when the input was images
};

/// Reads the input images as float32 [N,C,H,W] in [0,1]; `files` gets the
/// image paths in order when the input is a file or a folder of images.
torch::Tensor read_input_images(const std::string& input, int64_t channels,
                                std::vector<std::string>* files = nullptr);

/// Runs the prediction and writes options.out atomically.
PredictResult run_predict(PredictOptions options);

}  // namespace xfer::eval
