#pragma once
/// \file
/// torchvision ImageFolder layout: ROOT/<class>/<image>.png|jpg|jpeg, classes
/// sorted by name. Decoding with stb_image; optional bilinear resize.

#include <string>

#include <torch/types.h>

#include "xfer/data/dataset.h"

namespace xfer::data {

struct ImageFolderOptions {
  /// Resize every image to size x size; 0 means all images must share one size.
  int64_t image_size = 0;
  /// Channels: 0 = as found (all must agree; gray when every image is gray), 1 or 3.
  int64_t channels = 0;
};

/// Reads the folder. Throws xfer::Error naming the folder or file when it is
/// missing or empty, a class folder holds no image, an image cannot be decoded,
/// or sizes disagree without a resize.
Dataset read_image_folder(const std::string& root, const ImageFolderOptions& options = {});

/// Decodes one PNG/JPEG file into uint8 [C,H,W] (C = channels, or the file's own
/// count reduced to 1 or 3 when channels == 0).
torch::Tensor read_image(const std::string& path, int64_t channels = 0);

/// Writes uint8 or float [0,1] [C,H,W] (C = 1 or 3) as PNG, atomically.
void write_png(const std::string& path, const torch::Tensor& image);

/// Bilinear resize of uint8 [C,H,W] to [C,h,w].
torch::Tensor resize_image(const torch::Tensor& image, int64_t h, int64_t w);

}  // namespace xfer::data
