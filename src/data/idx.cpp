#include "xfer/data/idx.h"

#include <zlib.h>

#include <cstring>
#include <limits>

#include <torch/torch.h>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"

namespace xfer::data {
namespace {

constexpr uint8_t kTypeUint8 = 0x08;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_gzip(const std::string& bytes) {
  return bytes.size() >= 2 && static_cast<uint8_t>(bytes[0]) == 0x1f &&
         static_cast<uint8_t>(bytes[1]) == 0x8b;
}

uint32_t read_be32(const std::string& bytes, size_t pos) {
  return (uint32_t(uint8_t(bytes[pos])) << 24) | (uint32_t(uint8_t(bytes[pos + 1])) << 16) |
         (uint32_t(uint8_t(bytes[pos + 2])) << 8) | uint32_t(uint8_t(bytes[pos + 3]));
}

void put_be32(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>((v >> 24) & 0xff));
  out.push_back(static_cast<char>((v >> 16) & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

std::string gzip(const std::string& bytes, const std::string& what) {
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  // 16 + MAX_WBITS: write a gzip header and trailer.
  XFER_CHECK(deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
                          Z_DEFAULT_STRATEGY) == Z_OK,
             what, ": cannot initialise gzip compression");
  std::string out;
  out.resize(deflateBound(&zs, static_cast<uLong>(bytes.size())) + 64);
  size_t in_pos = 0;
  size_t out_pos = 0;
  int ret = Z_OK;
  constexpr size_t kChunk = size_t(1) << 30;
  while (ret != Z_STREAM_END) {
    size_t in_left = bytes.size() - in_pos;
    size_t in_now = std::min(in_left, kChunk);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + in_pos));
    zs.avail_in = static_cast<uInt>(in_now);
    if (out.size() - out_pos < 1024) out.resize(out.size() * 2 + 1024);
    size_t out_now = std::min(out.size() - out_pos, kChunk);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + out_pos);
    zs.avail_out = static_cast<uInt>(out_now);
    int flush = (in_now == in_left) ? Z_FINISH : Z_NO_FLUSH;
    ret = deflate(&zs, flush);
    if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR) {
      deflateEnd(&zs);
      throw Error(str_cat(what, ": gzip compression failed (zlib error ", ret, ")"));
    }
    in_pos += in_now - zs.avail_in;
    out_pos += out_now - zs.avail_out;
  }
  deflateEnd(&zs);
  out.resize(out_pos);
  return out;
}

}  // namespace

std::string gunzip(const std::string& bytes, const std::string& what, size_t max_output,
                   size_t stop_after) {
  XFER_CHECK(is_gzip(bytes), what, ": not gzip data (expected magic bytes 1f 8b)");
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  XFER_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, what,
             ": cannot initialise gzip decompression");
  // Frees zlib's state on every way out, std::bad_alloc included.
  struct InflateGuard {
    z_stream* zs;
    ~InflateGuard() { inflateEnd(zs); }
  } guard{&zs};
  std::string out;
  // Typical IDX compression is 3-5x; grow as the data comes (never to a size
  // only claimed), up to stop_after or the limit.
  const size_t cap = stop_after > 0 ? std::min(max_output, stop_after) : max_output;
  out.resize(std::min(cap, std::max<size_t>(bytes.size() * 4, 4096)));
  size_t in_pos = 0;
  size_t out_pos = 0;
  constexpr size_t kChunk = size_t(1) << 30;
  int ret = Z_OK;
  for (;;) {
    if (out_pos == out.size()) {
      if (stop_after > 0 && out_pos == stop_after) break;
      XFER_CHECK(out.size() < max_output, what, ": decompressed data exceeds the limit of ",
                 max_output, " bytes");
      out.resize(out.size() > cap / 2 ? cap : out.size() * 2);
    }
    size_t in_now = std::min(bytes.size() - in_pos, kChunk);
    size_t out_now = std::min(out.size() - out_pos, kChunk);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + in_pos));
    zs.avail_in = static_cast<uInt>(in_now);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + out_pos);
    zs.avail_out = static_cast<uInt>(out_now);
    ret = inflate(&zs, Z_NO_FLUSH);
    in_pos += in_now - zs.avail_in;
    out_pos += out_now - zs.avail_out;
    if (ret == Z_STREAM_END) {
      // Concatenated gzip members (as `cat a.gz b.gz` makes) are valid gzip.
      if (in_pos < bytes.size() && bytes.size() - in_pos >= 2 &&
          is_gzip(bytes.substr(in_pos, 2))) {
        XFER_CHECK(inflateReset(&zs) == Z_OK, what, ": gzip decompression failed");
        continue;
      }
      break;
    }
    if (ret == Z_NEED_DICT || ret == Z_DATA_ERROR || ret == Z_MEM_ERROR) {
      throw Error(str_cat(what, ": corrupt gzip data (", zs.msg ? zs.msg : "invalid data", ")"));
    }
    if (ret == Z_BUF_ERROR || ret == Z_OK) {
      // No progress possible with all input consumed: the stream ended early.
      XFER_CHECK(!(in_pos == bytes.size() && zs.avail_out > 0), what,
                 ": truncated gzip data (stream ends after ", bytes.size(), " bytes)");
      continue;
    }
    throw Error(str_cat(what, ": gzip decompression failed (zlib error ", ret, ")"));
  }
  out.resize(out_pos);
  return out;
}

namespace {

struct IdxHeader {
  size_t bytes = 0;  ///< the header's own size
  std::vector<int64_t> dims;
  uint64_t total = 0;  ///< payload bytes the dimensions need
};

// The header at the start of `bytes` (which may hold only a prefix of the
// file), checked: magic, element type, rank, and a product of dimensions that
// fits 64 bits.
IdxHeader parse_idx_header(const std::string& bytes, const std::string& path) {
  XFER_CHECK(bytes.size() >= 4, path, ": not an IDX file (", bytes.size(),
             " bytes, expected at least a 4-byte header)");
  XFER_CHECK(bytes[0] == 0 && bytes[1] == 0, path,
             ": not an IDX file (magic must start with bytes 00 00)");
  uint8_t type = static_cast<uint8_t>(bytes[2]);
  static const char* kHex = "0123456789abcdef";
  XFER_CHECK(type == kTypeUint8, path, ": IDX element type 0x", kHex[type >> 4], kHex[type & 15],
             " not supported (expected 0x08, unsigned byte)");
  int ndims = static_cast<uint8_t>(bytes[3]);
  XFER_CHECK(ndims >= 1 && ndims <= 4, path, ": IDX file has ", ndims,
             " dimensions (expected 1 to 4)");
  IdxHeader h;
  h.bytes = 4 + 4 * static_cast<size_t>(ndims);
  XFER_CHECK(bytes.size() >= h.bytes, path, ": truncated IDX header (", bytes.size(),
             " bytes, expected ", h.bytes, ")");
  h.total = 1;
  for (int d = 0; d < ndims; ++d) {
    uint32_t n = read_be32(bytes, 4 + 4 * static_cast<size_t>(d));
    h.dims.push_back(static_cast<int64_t>(n));
    if (n != 0 && h.total > std::numeric_limits<uint64_t>::max() / n) {
      throw Error(str_cat(path, ": IDX dimensions overflow"));
    }
    h.total *= n;
  }
  return h;
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::string bytes = read_file(path);
  if (is_gzip(bytes)) {
    // The header first (at most 20 bytes), then exactly the payload it
    // declares and one byte more (to see trailing bytes): a few MB of gzip
    // that inflate to gigabytes of zeros are refused by their header, not
    // inflated.
    constexpr size_t kMax = size_t(1) << 32;
    const IdxHeader h = parse_idx_header(gunzip(bytes, path, kMax, 4 + 4 * 4), path);
    XFER_CHECK(h.total <= kMax - h.bytes - 1, path, ": IDX dimensions declare ", h.total,
               " bytes; xfer reads at most ", kMax, " decompressed");
    bytes = gunzip(bytes, path, kMax, h.bytes + static_cast<size_t>(h.total) + 1);
  }
  const IdxHeader h = parse_idx_header(bytes, path);
  uint64_t payload = bytes.size() - h.bytes;
  XFER_CHECK(payload <= h.total, path, ": IDX payload runs past the ", h.total,
             " bytes that dimensions ", c10::IntArrayRef(h.dims), " need (trailing bytes)");
  XFER_CHECK(payload == h.total, path, ": IDX payload has ", payload, " bytes, dimensions ",
             c10::IntArrayRef(h.dims), " need ", h.total, " (file truncated)");
  auto t = torch::empty(h.dims, torch::kUInt8);
  if (h.total > 0) std::memcpy(t.data_ptr<uint8_t>(), bytes.data() + h.bytes, h.total);
  return t;
}

Dataset read_idx_pair(const std::string& images_path, const std::string& labels_path,
                      std::vector<std::string> class_names) {
  auto images = read_idx(images_path);
  auto labels = read_idx(labels_path);
  XFER_CHECK(images.dim() == 3 || images.dim() == 4, images_path,
             ": expected images of shape [N,H,W] or [N,C,H,W], got ", images.sizes());
  XFER_CHECK(labels.dim() == 1, labels_path, ": expected labels of shape [N], got ",
             labels.sizes());
  if (images.dim() == 3) images = images.unsqueeze(1);
  XFER_CHECK(images.size(0) == labels.size(0), labels_path, ": has ", labels.size(0),
             " labels but ", images_path, " has ", images.size(0), " images");
  XFER_CHECK(images.size(0) > 0, images_path, ": holds no images");
  Dataset ds;
  ds.images = images.contiguous();
  ds.labels = labels.to(torch::kLong);
  int64_t max_label = ds.labels.max().item<int64_t>();
  if (class_names.empty()) {
    for (int64_t c = 0; c <= max_label; ++c) class_names.push_back(std::to_string(c));
  } else {
    XFER_CHECK(max_label < static_cast<int64_t>(class_names.size()), labels_path,
               ": label ", max_label, " out of range (expected < ", class_names.size(), ")");
  }
  ds.class_names = std::move(class_names);
  ds.index = torch::arange(ds.size(), torch::kLong);
  ds.source = images_path + "," + labels_path;
  return ds;
}

void write_idx(const std::string& path, const torch::Tensor& data) {
  XFER_CHECK(data.defined(), path, ": no tensor to write");
  XFER_CHECK(data.scalar_type() == torch::kUInt8, path,
             ": IDX writer supports only uint8 tensors, got ", data.scalar_type());
  XFER_CHECK(data.dim() >= 1 && data.dim() <= 4, path, ": IDX tensor must have 1 to 4 dims, got ",
             data.dim());
  auto t = data.contiguous().cpu();
  std::string bytes;
  bytes.reserve(4 + 4 * t.dim() + t.numel());
  bytes.push_back(0);
  bytes.push_back(0);
  bytes.push_back(static_cast<char>(kTypeUint8));
  bytes.push_back(static_cast<char>(t.dim()));
  for (int64_t d = 0; d < t.dim(); ++d) {
    XFER_CHECK(t.size(d) <= std::numeric_limits<uint32_t>::max(), path,
               ": dimension too large for IDX");
    put_be32(bytes, static_cast<uint32_t>(t.size(d)));
  }
  bytes.append(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()),
               static_cast<size_t>(t.numel()));
  if (ends_with(path, ".gz")) bytes = gzip(bytes, path);
  write_file_atomic(path, bytes);
}

}  // namespace xfer::data
