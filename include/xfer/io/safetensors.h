#pragma once
/// \file
/// The safetensors format (huggingface/safetensors): 8-byte little-endian header
/// length N, N bytes of JSON header {name: {dtype, shape, data_offsets:[b,e]},
/// "__metadata__": {str: str}}, then the byte buffer. The reader checks every
/// size and offset before it allocates or reads; it never executes anything.

#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

namespace xfer::io {

/// Largest header accepted (as the reference implementation: 100 MB).
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

/// Named tensors in file order (sorted by name) plus string metadata.
struct TensorFile {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  /// The tensor with that name; throws xfer::Error if absent.
  const torch::Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
  void add(const std::string& name, const torch::Tensor& t) { tensors.emplace_back(name, t); }
};

/// Parses safetensors bytes; `what` names the source in errors.
TensorFile parse_safetensors(const std::string& bytes, const std::string& what);
/// Reads a safetensors file (size checked against the header before reading data).
TensorFile read_safetensors(const std::string& path);
/// Serialises tensors (any of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; made
/// contiguous on CPU). Names must be unique and not "__metadata__".
std::string serialize_safetensors(const TensorFile& file);
/// Writes atomically.
void write_safetensors(const std::string& path, const TensorFile& file);

/// safetensors dtype string ("F32") for a torch dtype; throws if unsupported.
std::string dtype_name(torch::Dtype dtype);
/// torch dtype for a safetensors dtype string; throws if unsupported.
torch::Dtype dtype_from_name(const std::string& name);

}  // namespace xfer::io
