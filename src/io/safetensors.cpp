#include "xfer/io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/json.h"

namespace xfer::io {
namespace {

struct DtypeInfo {
  const char* name;
  torch::Dtype dtype;
  size_t size;
};

const DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8}, {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8}, {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

uint64_t read_le64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

struct Entry {
  std::string name;
  const DtypeInfo* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Parses and validates the header against a buffer of `data_size` bytes.
std::vector<Entry> parse_header(const std::string& header, uint64_t data_size,
                                const std::string& what, std::map<std::string, std::string>& meta) {
  Json j;
  // A key twice in one object is refused: nlohmann keeps the last silently, so
  // {"w": F32..., "w": I32...} would load as whichever came last.
  std::vector<std::set<std::string>> keys;
  auto no_repeats = [&](int depth, nlohmann::json::parse_event_t event, Json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      keys.resize(static_cast<size_t>(depth) + 1);
      keys.back().clear();
    } else if (event == E::key) {
      auto& seen = keys.at(static_cast<size_t>(depth) - 1);
      XFER_CHECK(seen.insert(parsed.get<std::string>()).second, what,
                 ": safetensors header lists key '", parsed.get<std::string>(), "' twice");
    }
    return true;
  };
  try {
    j = Json::parse(header, no_repeats);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(str_cat(what, ": safetensors header is not valid JSON (byte ", e.byte, ")"));
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    throw Error(str_cat(what, ": safetensors header is not valid JSON (", e.what(), ")"));
  }
  XFER_CHECK(j.is_object(), what, ": safetensors header must be a JSON object");
  std::vector<Entry> entries;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      XFER_CHECK(v.is_object(), what, ": __metadata__ must be an object of strings");
      for (const auto& [k, s] : v.items()) {
        XFER_CHECK(s.is_string(), what, ": __metadata__ value of '", k, "' is not a string");
        meta[k] = s.get<std::string>();
      }
      continue;
    }
    const std::string where = str_cat(what, ": tensor '", name, "'");
    XFER_CHECK(v.is_object(), where, " must be an object");
    XFER_CHECK(v.contains("dtype") && v["dtype"].is_string(), where, ": missing dtype");
    XFER_CHECK(v.contains("shape") && v["shape"].is_array(), where, ": missing shape");
    XFER_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() &&
                   v["data_offsets"].size() == 2,
               where, ": data_offsets must be [begin, end]");
    Entry e;
    e.name = name;
    e.dtype = find_dtype(v["dtype"].get<std::string>());
    XFER_CHECK(e.dtype != nullptr, where, ": unsupported dtype '", v["dtype"].get<std::string>(), "'");
    XFER_CHECK(v["shape"].size() <= 16, where, ": too many dimensions");
    // Element count with overflow checks: no partial product may exceed the buffer.
    bool has_zero = false;
    for (const auto& d : v["shape"]) {
      XFER_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0), where,
                 ": shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      XFER_CHECK(dim <= (uint64_t(1) << 62), where, ": dimension too large");
      has_zero = has_zero || dim == 0;
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t numel = has_zero ? 0 : 1;
    if (has_zero) {
      // Empty, but torch still multiplies the other dimensions (and the
      // element size) and throws on overflow: bound them as torch will.
      const uint64_t limit = uint64_t(INT64_MAX) / e.dtype->size;
      uint64_t product = 1;
      for (int64_t dim : e.shape) {
        if (dim == 0) continue;
        XFER_CHECK(product <= limit / static_cast<uint64_t>(dim), where, ": shape too large");
        product *= static_cast<uint64_t>(dim);
      }
    } else {
      for (int64_t dim : e.shape) {
        XFER_CHECK(numel <= data_size / static_cast<uint64_t>(dim), where,
                   ": shape larger than the file");
        numel *= static_cast<uint64_t>(dim);
      }
    }
    for (const auto& o : v["data_offsets"]) {
      XFER_CHECK(o.is_number_unsigned() || (o.is_number_integer() && o.get<int64_t>() >= 0), where,
                 ": data_offsets must be non-negative integers");
    }
    e.begin = v["data_offsets"][0].get<uint64_t>();
    e.end = v["data_offsets"][1].get<uint64_t>();
    XFER_CHECK(e.begin <= e.end, where, ": data_offsets begin > end");
    XFER_CHECK(e.end <= data_size, where, ": data_offsets end ", e.end,
               " is past the end of the data (", data_size, " bytes)");
    XFER_CHECK(numel <= data_size && numel * e.dtype->size == e.end - e.begin, where, ": ",
               e.end - e.begin, " bytes do not match dtype ", e.dtype->name, " x shape");
    entries.push_back(std::move(e));
  }
  // The buffer must be covered exactly: no overlap, no hole, nothing after.
  std::vector<const Entry*> by_offset;
  for (const auto& e : entries) by_offset.push_back(&e);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : by_offset) {
    XFER_CHECK(e->begin >= cursor, what, ": tensor '", e->name, "' overlaps another tensor");
    XFER_CHECK(e->begin == cursor, what, ": hole in the data before tensor '", e->name, "'");
    cursor = e->end;
  }
  XFER_CHECK(cursor == data_size, what, ": ", data_size - cursor,
             " bytes after the last tensor (file has trailing data)");
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return entries;
}

}  // namespace

std::string dtype_name(torch::Dtype dtype) {
  for (const auto& d : kDtypes) {
    if (d.dtype == dtype) return d.name;
  }
  throw Error(str_cat("safetensors: unsupported dtype ", dtype));
}

torch::Dtype dtype_from_name(const std::string& name) {
  const DtypeInfo* d = find_dtype(name);
  XFER_CHECK(d != nullptr, "safetensors: unsupported dtype '", name, "'");
  return d->dtype;
}

const torch::Tensor& TensorFile::at(const std::string& name) const {
  for (const auto& [k, t] : tensors) {
    if (k == name) return t;
  }
  throw Error(str_cat("safetensors: no tensor named '", name, "'"));
}

bool TensorFile::contains(const std::string& name) const {
  for (const auto& [k, t] : tensors) {
    if (k == name) return true;
  }
  return false;
}

TensorFile parse_safetensors(const std::string& bytes, const std::string& what) {
  XFER_CHECK(bytes.size() >= 8, what, ": too short for a safetensors file (", bytes.size(),
             " bytes)");
  uint64_t n = read_le64(bytes.data());
  XFER_CHECK(n <= kMaxSafetensorsHeader, what, ": safetensors header of ", n,
             " bytes exceeds the limit of ", kMaxSafetensorsHeader);
  XFER_CHECK(n <= bytes.size() - 8, what, ": safetensors header length ", n,
             " is past the end of the file (", bytes.size(), " bytes)");
  TensorFile file;
  auto entries = parse_header(bytes.substr(8, n), bytes.size() - 8 - n, what, file.metadata);
  const char* data = bytes.data() + 8 + n;
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    if (e.dtype->dtype == torch::kBool) {
      // Any byte but 0 and 1 is not a bool (undefined behaviour when read as one).
      const auto* b = reinterpret_cast<const unsigned char*>(data + e.begin);
      for (uint64_t i = 0; i < e.end - e.begin; ++i) {
        XFER_CHECK(b[i] <= 1, what, ": tensor '", e.name, "' (BOOL) holds byte ", int(b[i]),
                   " at element ", i);
      }
    }
    file.tensors.emplace_back(e.name, t);
  }
  return file;
}

TensorFile read_safetensors(const std::string& path) {
  // Check the announced header length against the file size before reading it all.
  std::error_code ec;
  XFER_CHECK(std::filesystem::is_regular_file(path, ec), path, ": no such file");
  uint64_t size = std::filesystem::file_size(path, ec);
  XFER_CHECK(!ec, path, ": cannot read size");
  XFER_CHECK(size >= 8, path, ": too short for a safetensors file (", size, " bytes)");
  {
    std::ifstream in(path, std::ios::binary);
    char head[8];
    XFER_CHECK(in.read(head, 8), path, ": cannot read");
    uint64_t n = read_le64(head);
    XFER_CHECK(n <= kMaxSafetensorsHeader, path, ": safetensors header of ", n,
               " bytes exceeds the limit of ", kMaxSafetensorsHeader);
    XFER_CHECK(n <= size - 8, path, ": safetensors header length ", n,
               " is past the end of the file (", size, " bytes)");
  }
  return parse_safetensors(read_file(path), path);
}

std::string serialize_safetensors(const TensorFile& file) {
  std::vector<std::pair<std::string, torch::Tensor>> sorted = file.tensors;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  Json header = Json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  std::vector<torch::Tensor> contiguous;
  for (const auto& [name, t] : sorted) {
    XFER_CHECK(name != "__metadata__", "safetensors: '__metadata__' is not a tensor name");
    XFER_CHECK(seen.insert(name).second, "safetensors: duplicate tensor name '", name, "'");
    XFER_CHECK(t.defined(), "safetensors: tensor '", name, "' is undefined");
    auto c = t.detach().to(torch::kCPU).contiguous();
    uint64_t nbytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    contiguous.push_back(c);
  }
  std::string h = header.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& c : contiguous) {
    out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  return out;
}

void write_safetensors(const std::string& path, const TensorFile& file) {
  write_file_atomic(path, serialize_safetensors(file));
}

}  // namespace xfer::io
