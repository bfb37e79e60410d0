#pragma once
/// \file
/// Training checkpoints for exact resume: one safetensors file
/// (DIR/checkpoint.safetensors) holding every tensor (model, best weights,
/// optimizer moments, RNG state) and, in its metadata under "xfer_checkpoint",
/// a JSON document with the rest (recipe, epoch, step, history). One file
/// written atomically means a kill at any moment leaves either the previous
/// checkpoint or the new one, never a mix. No pickle.

#include <string>

#include "xfer/core/json.h"
#include "xfer/io/safetensors.h"

namespace xfer::io {

struct Checkpoint {
  Json state = Json::object();
  TensorFile tensors;
};

/// DIR/checkpoint.safetensors
std::string checkpoint_file(const std::string& dir);
/// Whether DIR holds a checkpoint file.
bool has_checkpoint(const std::string& dir);
/// Creates DIR if needed and replaces its checkpoint atomically.
void write_checkpoint(const std::string& dir, const Checkpoint& checkpoint);
/// Reads and validates a checkpoint (format tag, JSON state); throws
/// xfer::Error naming the file.
Checkpoint read_checkpoint(const std::string& dir);

}  // namespace xfer::io
