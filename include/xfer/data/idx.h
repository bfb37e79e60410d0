#pragma once
/// \file
/// The IDX format of (Fashion-)MNIST, raw or gzip-compressed.

#include <string>

#include <torch/types.h>

#include "xfer/data/dataset.h"

namespace xfer::data {

/// Reads an IDX file (gzip detected by its magic bytes). Checks the magic,
/// the element type (only unsigned byte, 0x08), the number of dimensions, and
/// that the file holds exactly the bytes the dimensions announce.
/// Returns a uint8 tensor with the file's dimensions.
torch::Tensor read_idx(const std::string& path);

/// Reads an images file ([N,H,W] or [N,C,H,W]) and a labels file ([N]) into a
/// dataset; checks the counts agree. Class names are "0".."K-1" unless given.
Dataset read_idx_pair(const std::string& images_path, const std::string& labels_path,
                      std::vector<std::string> class_names = {});

/// Writes an IDX uint8 file, gzip-compressed when the path ends in ".gz"
/// (used by tests and to export data).
void write_idx(const std::string& path, const torch::Tensor& data);

/// Decompresses gzip bytes; throws xfer::Error naming `what` if corrupt or
/// truncated, or if the output would pass `max_output`. With `stop_after` > 0
/// it returns at most the first `stop_after` bytes (fewer if the data ends
/// first): how read_idx reads a header, then no more than the payload the
/// header declares. Memory grows with the data, never to a claimed size.
std::string gunzip(const std::string& bytes, const std::string& what,
                   size_t max_output = size_t(1) << 32, size_t stop_after = 0);

}  // namespace xfer::data
