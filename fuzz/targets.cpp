#include "targets.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <torch/torch.h>
#include <zlib.h>

#include "xfer/core/error.h"
#include "xfer/core/fs.h"
#include "xfer/core/json.h"
#include "xfer/core/parse.h"
#include "xfer/core/sha256.h"
#include "xfer/data/idx.h"
#include "xfer/data/image_folder.h"
#include "xfer/data/spec.h"
#include "xfer/io/model_dir.h"
#include "xfer/io/safetensors.h"
#include "xfer/study/study.h"

namespace fs = std::filesystem;

namespace xfer::fuzz {
namespace {

// Readers take paths, so inputs go through files in one scratch folder per
// process (in memory where /dev/shm exists).
const std::string& scratch_dir() {
  static const std::string dir = [] {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path d = base / ("xfer-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d.string();
  }();
  return dir;
}

std::string put(const std::string& name, const std::string& bytes) {
  const std::string path = scratch_dir() + "/" + name;
  write_file_atomic(path, bytes);
  return path;
}

[[noreturn]] void finding(const std::string& what) {
  throw std::logic_error("fuzz finding: " + what);
}

std::string as_string(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

std::string gzip_bytes(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    finding("deflateInit2");
  std::string out(deflateBound(&z, in.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) finding("deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// First byte: 0 = the rest is a raw IDX file, 1 = the rest is a .gz file as
// is (the gzip reader), 2 = the rest gzip-compressed (IDX content behind a
// valid gzip stream). A tensor that comes back must agree with its header.
void idx(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const std::string rest = as_string(data + 1, size - 1);
  std::string path;
  switch (data[0] % 3) {
    case 0:
      path = put("in.idx", rest);
      break;
    case 1:
      path = put("in.idx.gz", rest);
      break;
    default:
      path = put("in.idx.gz", gzip_bytes(rest));
      break;
  }
  torch::Tensor t = data::read_idx(path);
  if (t.scalar_type() != torch::kUInt8 || t.dim() < 1) finding("read_idx returned a bad tensor");
  // (A raw input may itself be gzip: the reader goes by the magic bytes.)
  const bool gz = rest.size() >= 2 && uint8_t(rest[0]) == 0x1f && uint8_t(rest[1]) == 0x8b;
  if (data[0] % 3 == 0 && !gz && static_cast<size_t>(t.numel()) + 4 + 4 * t.dim() != rest.size()) {
    finding("read_idx: tensor size does not match the file");
  }
}

// A parsed file must serialise and parse back to the same tensors.
void safetensors(const uint8_t* data, size_t size) {
  io::TensorFile f = io::parse_safetensors(as_string(data, size), "fuzz.safetensors");
  io::TensorFile g = io::parse_safetensors(io::serialize_safetensors(f), "round trip");
  if (f.tensors.size() != g.tensors.size())
    finding("safetensors round trip changed the tensor count");
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& [name, t] = f.tensors[i];
    const torch::Tensor a = t.contiguous(), b = g.tensors[i].second.contiguous();
    // Bytes, not values: NaN payloads must survive too.
    if (g.tensors[i].first != name || a.scalar_type() != b.scalar_type() ||
        a.sizes() != b.sizes() ||
        (a.nbytes() > 0 && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) != 0)) {
      finding("safetensors round trip changed " + name);
    }
  }
}

// A model directory: config.json and card.json from the input (separated by a
// NUL byte; "@SHA@" in the card stands for the weights' sha256, so inputs can
// pass the hash check), beside the weights of a fixed tiny cnn.
void model_dir(const uint8_t* data, size_t size) {
  static const std::string weights = [] {
    torch::manual_seed(0);
    io::ModelConfig c;
    c.arch = "cnn";
    c.arch_options = Json{{"widths", {2, 2}}, {"hidden", 4}, {"dropout", 0}};
    c.num_classes = 3;
    c.input_shape = {1, 8, 8};
    c.mean = {0.5};
    c.std = {0.25};
    auto model = io::build_model(c);
    return io::serialize_safetensors(io::state_dict(*model));
  }();
  static const std::string sha = sha256_hex(weights);
  const std::string in = as_string(data, size);
  const size_t nul = in.find('\0');
  const std::string config = in.substr(0, nul);
  std::string card = nul == std::string::npos ? std::string("{}") : in.substr(nul + 1);
  for (size_t p = card.find("@SHA@"); p != std::string::npos;
       p = card.find("@SHA@", p + sha.size())) {
    card.replace(p, 5, sha);
  }
  const std::string dir = scratch_dir() + "/model";
  fs::create_directories(dir);
  write_file_atomic(dir + "/config.json", config);
  write_file_atomic(dir + "/card.json", card);
  write_file_atomic(dir + "/model.safetensors", weights);
  io::LoadedModel m = io::load_model_dir(dir);
  if (m.card.id != sha)
    finding("load_model_dir accepted a card whose id is not the weights' sha256");
}

// Every key optional; what parses must validate and survive to_json/from_json.
void study_config(const uint8_t* data, size_t size) {
  const std::string path = put("study.json", as_string(data, size));
  study::StudyConfig c = study::StudyConfig::from_json(read_json(path), path);
  c.validate();
  const Json j = c.to_json();
  if (study::StudyConfig::from_json(j, "round trip").to_json() != j)
    finding("study config round trip");
}

// A SPEC string: parse, and str() must parse back to the same spec.
void data_spec(const uint8_t* data, size_t size) {
  const data::DataSpec s = data::DataSpec::parse(as_string(data, size));
  const std::string text = s.str();
  if (data::DataSpec::parse(text).str() != text) finding("spec does not round-trip: " + text);
}

// --eps and friends: 0.03, 8/255, lists; a value that parses is a number.
void eps(const uint8_t* data, size_t size) {
  const std::string text = as_string(data, size);
  for (double v : parse_fraction_list(text, "--eps")) {
    (void)v;  // NaN/inf are the caller's to refuse; parsing must not crash.
  }
  if (text.find(',') == std::string::npos) (void)parse_fraction(text, "--eps");
}

// An image file as the image-folder reader decodes it (PNG and JPEG; anything else, BMP
// included, is refused): first byte picks the extension and the channel request.
void image(const uint8_t* data, size_t size) {
  if (size == 0) return;
  static const char* const kExt[] = {".png", ".jpg", ".bmp", ".jpeg"};
  const std::string path =
      put(std::string("in") + kExt[data[0] % 4], as_string(data + 1, size - 1));
  static const int64_t kChannels[] = {0, 1, 3, 0};  // 0 = as stored
  const int64_t channels = kChannels[(data[0] >> 2) % 4];
  torch::Tensor t = data::read_image(path, channels);
  if (t.dim() != 3 || t.size(1) < 1 || t.size(2) < 1) finding("read_image returned a bad shape");
  if (channels != 0 && t.size(0) != channels) finding("read_image ignored the channel request");
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"idx", idx, "IDX files, raw and gzip (data::read_idx)"},
      {"safetensors", safetensors,
       "safetensors files (io::parse_safetensors) and their round trip"},
      {"model_dir", model_dir, "model directories: config.json and card.json (io::load_model_dir)"},
      {"study_config", study_config, "study configs (study::StudyConfig::from_json)"},
      {"data_spec", data_spec, "data SPEC strings (data::DataSpec::parse) and their round trip"},
      {"eps", eps, "epsilon values and lists (parse_fraction, parse_fraction_list)"},
      {"image", image, "PNG/JPEG decoding of the image-folder reader (data::read_image; other formats refused)"},
  };
  return all;
}

const Target& find_target(const std::string& name) {
  for (const auto& t : targets()) {
    if (t.name == name) return t;
  }
  std::string names;
  for (const auto& t : targets()) names += (names.empty() ? "" : ", ") + t.name;
  throw std::invalid_argument("no fuzz target '" + name + "' (targets: " + names + ")");
}

void run_one(const Target& target, const uint8_t* data, size_t size) {
  try {
    target.fn(data, size);
  } catch (const Error&) {
    // Refused with a clear message: what the CLI prints as one line.
  }
}

}  // namespace xfer::fuzz
