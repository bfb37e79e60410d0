#include "xfer/data/image_folder.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <memory>

#include <torch/torch.h>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/parse.h"

// The stb implementations live in this one translation unit.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
// PNG and JPEG only: a file named .png is decoded as what its bytes say, and the other decoders
// (GIF, PSD, HDR, PIC, PNM, TGA, BMP) are more attack surface for nothing.
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_resize.h>
#include <stb_image_write.h>

namespace fs = std::filesystem;

namespace xfer::data {
namespace {

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool is_image_file(const fs::path& p) {
  auto ext = lower(p.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

bool is_hidden(const fs::path& p) {
  auto name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

/// Walks a JPEG's marker segments and refuses a Huffman table (DHT) with more
/// than 256 codes: Debian's stb_image builds the table without that check and
/// writes past its 257-byte array (found by fuzz/run image).
void check_jpeg_tables(const std::string& bytes, const std::string& path) {
  const auto at = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  // The start marker as stb_image finds it: 0xff, any number of 0xff fill
  // bytes, then 0xd8 (checking only "ff d8" let "ff ff d8 ..." past).
  if (bytes.empty() || at(0) != 0xff) return;  // not a JPEG
  size_t pos = 1;
  while (pos < bytes.size() && at(pos) == 0xff) ++pos;
  if (pos >= bytes.size() || at(pos) != 0xd8) return;
  ++pos;
  while (pos + 4 <= bytes.size()) {
    if (at(pos) != 0xff) {  // entropy-coded data after SOS: skip to the next marker
      ++pos;
      continue;
    }
    const uint8_t marker = at(pos + 1);
    if (marker == 0xff || marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {
      pos += marker == 0xff ? 1 : 2;  // fill byte, stuffed zero, markers without a length
      continue;
    }
    if (marker == 0xd9) return;  // EOI
    const size_t len = (size_t(at(pos + 2)) << 8) | at(pos + 3);
    XFER_CHECK(len >= 2 && pos + 2 + len <= bytes.size(), path, ": corrupt JPEG (segment 0xff",
               int(marker), " of ", len, " bytes runs past the end of the file)");
    if (marker == 0xc4) {
      size_t p = pos + 4;
      const size_t end = pos + 2 + len;
      while (p < end) {
        XFER_CHECK(p + 17 <= end, path, ": corrupt JPEG (truncated Huffman table)");
        size_t codes = 0;
        for (size_t i = 1; i <= 16; ++i) codes += at(p + i);
        XFER_CHECK(codes <= 256, path, ": corrupt JPEG (Huffman table with ", codes, " codes, at most 256)");
        p += 17 + codes;
      }
    }
    pos += 2 + len;
  }
}

/// Decodes bytes to uint8 [C,H,W] with C = want (1 or 3), or the file's own
/// channel count reduced to 1 (gray, gray+alpha) or 3 (RGB, RGBA) when want == 0.
torch::Tensor decode(const std::string& bytes, const std::string& path, int64_t want) {
  XFER_CHECK(want == 0 || want == 1 || want == 3, path, ": channels must be 0, 1 or 3, got ",
             want);
  XFER_CHECK(bytes.size() <= static_cast<size_t>(INT32_MAX), path, ": image file too large");
  check_jpeg_tables(bytes, path);
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  int len = static_cast<int>(bytes.size());
  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp)) {
    const char* why = stbi_failure_reason();
    throw Error(str_cat(path, ": cannot decode image (", why ? why : "unknown format",
                        "; expected PNG or JPEG)"));
  }
  // The header's size, checked before stb allocates for it: a 100-byte file may
  // claim 100000 x 100000 pixels.
  constexpr int64_t kMaxPixels = int64_t(1) << 26;
  XFER_CHECK(w > 0 && h > 0 && int64_t(w) * h <= kMaxPixels, path, ": image header claims ", w, " x ", h,
             " pixels (xfer decodes at most ", kMaxPixels, ")");
  int req = static_cast<int>(want);
  if (req == 0) req = (comp <= 2) ? 1 : 3;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(data, len, &w, &h, &comp, req), stbi_image_free);
  if (!pixels) {
    const char* why = stbi_failure_reason();
    throw Error(str_cat(path, ": cannot decode image (", why ? why : "corrupt data", ")"));
  }
  XFER_CHECK(w > 0 && h > 0, path, ": image has no pixels");
  auto hwc = torch::from_blob(pixels.get(), {h, w, req}, torch::kUInt8);
  // clone, not contiguous(): a [1,H,W] view already counts as contiguous, and
  // the pixels are freed on return.
  return hwc.permute({2, 0, 1}).clone(at::MemoryFormat::Contiguous);
}

void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data),
                                             static_cast<size_t>(size));
}

}  // namespace

torch::Tensor read_image(const std::string& path, int64_t channels) {
  return decode(read_file(path), path, channels);
}

torch::Tensor resize_image(const torch::Tensor& image, int64_t h, int64_t w) {
  XFER_CHECK(image.dim() == 3 && image.scalar_type() == torch::kUInt8,
             "resize_image: expected uint8 [C,H,W], got ", image.scalar_type(), " ",
             image.sizes());
  XFER_CHECK(h > 0 && w > 0, "resize_image: target size must be positive, got ", h, "x", w);
  int64_t c = image.size(0);
  // stb_image_resize computes byte offsets in int: keep both images well inside it.
  constexpr int64_t kMaxBytes = int64_t(1) << 30;
  XFER_CHECK(c >= 1 && c <= 4 && h <= kMaxBytes / w / c && image.numel() <= kMaxBytes,
             "resize_image: ", image.sizes(), " to ", h, "x", w, " is too large");
  if (image.size(1) == h && image.size(2) == w) return image.contiguous();
  auto in = image.permute({1, 2, 0}).contiguous().cpu();
  auto out = torch::empty({h, w, c}, torch::kUInt8);
  // Triangle filter = bilinear interpolation when enlarging (and a tent
  // average when shrinking, which avoids aliasing); no sRGB conversion.
  int ok = stbir_resize_uint8_generic(
      in.data_ptr<uint8_t>(), static_cast<int>(in.size(1)), static_cast<int>(in.size(0)), 0,
      out.data_ptr<uint8_t>(), static_cast<int>(w), static_cast<int>(h), 0, static_cast<int>(c),
      STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE, STBIR_COLORSPACE_LINEAR,
      nullptr);
  XFER_CHECK(ok, "resize_image: resizing ", image.sizes(), " to ", h, "x", w, " failed");
  return out.permute({2, 0, 1}).contiguous();
}

void write_png(const std::string& path, const torch::Tensor& image) {
  XFER_CHECK(image.defined() && image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
             path, ": PNG image must be [C,H,W] with C = 1 or 3, got ",
             image.defined() ? image.sizes() : c10::IntArrayRef{});
  XFER_CHECK(image.size(1) > 0 && image.size(2) > 0, path, ": image has no pixels");
  torch::Tensor u8;
  if (image.scalar_type() == torch::kUInt8) {
    u8 = image.cpu();
  } else {
    XFER_CHECK(image.is_floating_point(), path, ": PNG image must be uint8 or float, got ",
               image.scalar_type());
    u8 = image.detach().cpu().to(torch::kFloat).mul(255.0f).round().clamp(0, 255).to(
        torch::kUInt8);
  }
  auto hwc = u8.permute({1, 2, 0}).contiguous();
  int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  int c = static_cast<int>(hwc.size(2));
  std::string bytes;
  int ok = stbi_write_png_to_func(append_bytes, &bytes, w, h, c, hwc.data_ptr<uint8_t>(), w * c);
  XFER_CHECK(ok && !bytes.empty(), path, ": PNG encoding failed");
  write_file_atomic(path, bytes);
}

Dataset read_image_folder(const std::string& root, const ImageFolderOptions& options) {
  XFER_CHECK(options.channels == 0 || options.channels == 1 || options.channels == 3, root,
             ": channels must be 0, 1 or 3, got ", options.channels);
  XFER_CHECK(options.image_size >= 0, root, ": image size must be >= 0, got ",
             options.image_size);
  std::error_code ec;
  XFER_CHECK(fs::exists(root, ec), root, ": no such folder");
  XFER_CHECK(fs::is_directory(root, ec), root, ": not a folder (expected ROOT/<class>/<image>)");

  std::vector<fs::path> class_dirs;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory() && !is_hidden(entry.path())) class_dirs.push_back(entry.path());
  }
  XFER_CHECK(!ec, root, ": cannot list folder (", ec.message(), ")");
  XFER_CHECK(!class_dirs.empty(), root,
             ": no class folders (expected ROOT/<class>/<image>.png|jpg|jpeg)");
  std::sort(class_dirs.begin(), class_dirs.end(),
            [](const fs::path& a, const fs::path& b) {
              return a.filename().string() < b.filename().string();
            });

  Dataset ds;
  std::vector<torch::Tensor> images;
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < class_dirs.size(); ++c) {
    std::vector<fs::path> paths;
    for (const auto& entry : fs::directory_iterator(class_dirs[c], ec)) {
      if (entry.is_regular_file() && !is_hidden(entry.path()) && is_image_file(entry.path())) {
        paths.push_back(entry.path());
      }
    }
    XFER_CHECK(!ec, class_dirs[c].string(), ": cannot list folder (", ec.message(), ")");
    XFER_CHECK(!paths.empty(), class_dirs[c].string(),
               ": class folder holds no .png, .jpg or .jpeg image");
    std::sort(paths.begin(), paths.end(), [](const fs::path& a, const fs::path& b) {
      return a.filename().string() < b.filename().string();
    });
    // Class names go into config.json: refused here, not after training.
    XFER_CHECK(is_utf8(class_dirs[c].filename().string()), class_dirs[c].string(),
               ": class folder name is not valid UTF-8 (rename it)");
    ds.class_names.push_back(class_dirs[c].filename().string());
    for (const auto& p : paths) {
      auto img = read_image(p.string(), options.channels);
      if (options.image_size > 0) {
        img = resize_image(img, options.image_size, options.image_size);
      } else if (!images.empty()) {
        const auto& first = images.front();
        XFER_CHECK(img.size(1) == first.size(1) && img.size(2) == first.size(2), p.string(),
                   ": image is ", img.size(2), "x", img.size(1), " but ", files.front(), " is ",
                   first.size(2), "x", first.size(1),
                   " (all images must share one size, or set size=N to resize)");
      }
      images.push_back(img);
      files.push_back(p.string());
      labels.push_back(static_cast<int64_t>(c));
    }
  }

  // With channels == 0: gray only when every image is gray, else RGB (gray replicated).
  int64_t channels = options.channels;
  if (channels == 0) {
    channels = 1;
    for (const auto& img : images) {
      if (img.size(0) == 3) channels = 3;
    }
  }
  for (auto& img : images) {
    if (img.size(0) != channels) img = img.expand({channels, img.size(1), img.size(2)});
  }
  ds.images = torch::stack(images).contiguous();
  ds.labels = torch::empty({static_cast<int64_t>(labels.size())}, torch::kLong);
  std::copy(labels.begin(), labels.end(), ds.labels.data_ptr<int64_t>());
  ds.index = torch::arange(ds.size(), torch::kLong);
  ds.source = root;
  return ds;
}

}  // namespace xfer::data
