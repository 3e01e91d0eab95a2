#include "engine/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace cpets {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using ordered_json = nlohmann::ordered_json;
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the Python package's limit too

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error("safetensors '" + file + "': " + what);
}

// ---------------------------------------------------------------------------------------------
// Writing

// Tensors in the canonical order (by name; all ours are F32, so the package's dtype-first sort
// changes nothing), with names checked.
std::vector<const std::pair<std::string, Tensor>*> canonical_order(const NamedTensors& tensors, const std::string& file) {
  std::vector<const std::pair<std::string, Tensor>*> order;
  for (const auto& entry : tensors) {
    if (entry.first.empty()) fail(file, "a tensor has an empty name");
    if (entry.first == "__metadata__") fail(file, "'__metadata__' is reserved and cannot name a tensor");
    if (!entry.second.defined()) fail(file, "tensor '" + entry.first + "' is undefined");
    if (entry.second.device() != Device::cpu()) fail(file, "tensor '" + entry.first + "' is not on the CPU; copy it there first");
    order.push_back(&entry);
  }
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->first < b->first; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->first == order[i - 1]->first) fail(file, "tensor name '" + order[i]->first + "' appears twice");
  return order;
}

// The 8-byte length plus the padded JSON header.
std::string build_header(const std::vector<const std::pair<std::string, Tensor>*>& order,
                         const SafetensorsMetadata& metadata, const std::string& file) {
  ordered_json header = ordered_json::object();
  if (!metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;  // std::map: sorted keys
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const auto* entry : order) {
    const uint64_t bytes = uint64_t(entry->second.numel()) * sizeof(float);
    ordered_json info = ordered_json::object();
    info["dtype"] = "F32";
    info["shape"] = ordered_json::array();
    for (int64_t d : entry->second.shape()) info["shape"].push_back(d);
    info["data_offsets"] = ordered_json::array({offset, offset + bytes});
    header[entry->first] = std::move(info);
    offset += bytes;
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(file, std::string("cannot encode the header (names and metadata must be valid UTF-8): ") + e.what());
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json;
}

// Streams the file's bytes to `sink` in order, without building the whole file in memory.
void emit_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata, const std::string& file,
                      const std::function<void(const char*, size_t)>& sink) {
  const auto order = canonical_order(tensors, file);
  const std::string header = build_header(order, metadata, file);
  sink(header.data(), header.size());
  for (const auto* entry : order) {
    const Tensor& t = entry->second;
    if (t.device() == Device::cpu()) {
      sink(reinterpret_cast<const char*>(t.data()), size_t(t.numel()) * sizeof(float));
    } else {  // a CUDA tensor: through a host copy, one tensor at a time
      const std::vector<float> host = t.to_vector();
      sink(reinterpret_cast<const char*>(host.data()), host.size() * sizeof(float));
    }
  }
}

std::string errno_text() { return std::strerror(errno); }

// ---------------------------------------------------------------------------------------------
// Reading

// Random access to the bytes of a file or of a string.
struct ByteSource {
  virtual ~ByteSource() = default;
  virtual uint64_t size() const = 0;
  virtual void read(uint64_t offset, uint64_t len, void* dst) const = 0;
};

struct MemorySource : ByteSource {
  explicit MemorySource(const std::string& b) : bytes(b) {}
  uint64_t size() const override { return bytes.size(); }
  void read(uint64_t offset, uint64_t len, void* dst) const override { std::memcpy(dst, bytes.data() + offset, len); }
  const std::string& bytes;
};

struct FileSource : ByteSource {
  explicit FileSource(const std::string& p) : path(p) {
    fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(p, "cannot open for reading: " + errno_text());
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      fail(p, "not a regular file");
    }
    bytes = uint64_t(st.st_size);
  }
  ~FileSource() override { ::close(fd); }
  uint64_t size() const override { return bytes; }
  void read(uint64_t offset, uint64_t len, void* dst) const override {
    char* out = static_cast<char*>(dst);
    while (len > 0) {
      const ssize_t got = ::pread(fd, out, std::min<uint64_t>(len, 1u << 30), off_t(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) fail(path, "read failed at byte " + std::to_string(offset) + (got < 0 ? ": " + errno_text() : ": unexpected end of file"));
      out += got;
      offset += uint64_t(got);
      len -= uint64_t(got);
    }
  }
  std::string path;
  int fd = -1;
  uint64_t bytes = 0;
};

struct DtypeInfo {
  const char* name;
  size_t bytes;
  float (*to_float)(const unsigned char*);
};

template <class T>
float load_as_float(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return static_cast<float>(v);
}

float half_to_float(const unsigned char* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24, exact in float
    const float magnitude = float(mantissa) * 0x1p-24f;
    return sign ? -magnitude : magnitude;
  }
  const uint32_t bits = exponent == 31 ? (sign | 0x7f800000u | (mantissa << 13))            // inf / nan
                                       : (sign | ((exponent + 112u) << 23) | (mantissa << 13));  // rebias 15 → 127
  return std::bit_cast<float>(bits);
}

float bfloat16_to_float(const unsigned char* p) {
  uint16_t b;
  std::memcpy(&b, p, 2);
  return std::bit_cast<float>(uint32_t(b) << 16);
}

float bool_to_float(const unsigned char* p) { return *p ? 1.f : 0.f; }

const DtypeInfo* find_dtype(const std::string& name) {
  static const DtypeInfo table[] = {
      {"F32", 4, load_as_float<float>},     {"F64", 8, load_as_float<double>},     {"F16", 2, half_to_float},
      {"BF16", 2, bfloat16_to_float},       {"I64", 8, load_as_float<int64_t>},    {"I32", 4, load_as_float<int32_t>},
      {"I16", 2, load_as_float<int16_t>},   {"I8", 1, load_as_float<int8_t>},      {"U64", 8, load_as_float<uint64_t>},
      {"U32", 4, load_as_float<uint32_t>},  {"U16", 2, load_as_float<uint16_t>},   {"U8", 1, load_as_float<uint8_t>},
      {"BOOL", 1, bool_to_float},
  };
  for (const auto& d : table)
    if (name == d.name) return &d;
  return nullptr;
}

struct EntryInfo {
  std::string name;
  const DtypeInfo* dtype;
  Shape shape;
  uint64_t begin, end;  // relative to the data section
};

uint64_t checked_u64(const ordered_json& v, const std::string& file, const std::string& what) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
    fail(file, what + " must be a non-negative integer, got " + v.dump());
  return v.get<uint64_t>();
}

EntryInfo parse_entry(const std::string& name, const ordered_json& info, uint64_t data_bytes, const std::string& file) {
  const std::string where = "tensor '" + name + "'";
  if (!info.is_object()) fail(file, where + ": header entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"})
    if (!info.contains(field)) fail(file, where + ": header entry lacks \"" + field + "\"");
  if (!info["dtype"].is_string()) fail(file, where + ": dtype is not a string");
  const std::string dtype = info["dtype"].get<std::string>();
  EntryInfo e{name, find_dtype(dtype), {}, 0, 0};
  if (!e.dtype)
    fail(file, where + ": unsupported dtype '" + dtype + "' (readable: F32 F64 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL)");
  if (!info["shape"].is_array()) fail(file, where + ": shape is not an array");
  uint64_t numel = 1;
  for (const auto& d : info["shape"]) {
    const uint64_t dim = checked_u64(d, file, where + ": shape entry");
    if (dim > uint64_t(std::numeric_limits<int64_t>::max()) || (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim))
      fail(file, where + ": shape " + info["shape"].dump() + " is too large");
    numel *= dim;
    e.shape.push_back(int64_t(dim));
  }
  const auto& offsets = info["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) fail(file, where + ": data_offsets must be [begin, end]");
  e.begin = checked_u64(offsets[0], file, where + ": data_offsets begin");
  e.end = checked_u64(offsets[1], file, where + ": data_offsets end");
  if (e.begin > e.end) fail(file, where + ": data_offsets " + offsets.dump() + " has begin > end");
  if (e.end > data_bytes)
    fail(file, where + ": data_offsets " + offsets.dump() + " reach beyond the " + std::to_string(data_bytes) +
                   " data bytes in the file (truncated?)");
  if (numel > std::numeric_limits<uint64_t>::max() / e.dtype->bytes || numel * e.dtype->bytes != e.end - e.begin)
    fail(file, where + ": " + dtype + " shape " + info["shape"].dump() + " needs " + std::to_string(numel * e.dtype->bytes) +
                   " bytes but data_offsets " + offsets.dump() + " span " + std::to_string(e.end - e.begin));
  return e;
}

Tensor read_tensor(const ByteSource& src, uint64_t data_start, const EntryInfo& e) {
  Tensor t = Tensor::empty(e.shape);
  const uint64_t n = uint64_t(t.numel());
  if (n == 0) return t;
  if (std::string(e.dtype->name) == "F32") {
    src.read(data_start + e.begin, n * 4, t.data());
    return t;
  }
  std::vector<unsigned char> raw(n * e.dtype->bytes);
  src.read(data_start + e.begin, raw.size(), raw.data());
  float* out = t.data();
  for (uint64_t i = 0; i < n; ++i) out[i] = e.dtype->to_float(raw.data() + i * e.dtype->bytes);
  return t;
}

SafetensorsFile parse(const ByteSource& src, const std::string& file) {
  const uint64_t size = src.size();
  if (size < 8) fail(file, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t header_len;
  src.read(0, 8, &header_len);
  if (header_len > size - 8)
    fail(file, "header length " + std::to_string(header_len) + " exceeds the file size " + std::to_string(size) +
                   " (truncated or not a safetensors file)");
  if (header_len > kMaxHeaderBytes) fail(file, "header length " + std::to_string(header_len) + " is over the 100 MB limit");
  std::string text(header_len, '\0');
  src.read(8, header_len, text.data());
  const ordered_json header = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail(file, "the header is not valid JSON");
  if (!header.is_object()) fail(file, "the header is not a JSON object");

  const uint64_t data_start = 8 + header_len, data_bytes = size - data_start;
  SafetensorsFile out;
  std::vector<EntryInfo> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) fail(file, "__metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) fail(file, "__metadata__ value for '" + mk + "' is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(key, value, data_bytes, file));
  }
  std::sort(entries.begin(), entries.end(),
            [](const EntryInfo& a, const EntryInfo& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  for (size_t i = 1; i < entries.size(); ++i)
    if (entries[i].begin < entries[i - 1].end)
      fail(file, "the data of tensors '" + entries[i - 1].name + "' [" + std::to_string(entries[i - 1].begin) + ", " +
                     std::to_string(entries[i - 1].end) + ") and '" + entries[i].name + "' [" + std::to_string(entries[i].begin) +
                     ", " + std::to_string(entries[i].end) + ") overlap");
  for (const auto& e : entries) {
    out.tensors.emplace_back(e.name, read_tensor(src, data_start, e));
    out.source_dtypes[e.name] = e.dtype->name;
  }
  return out;
}

std::string temp_path_for(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

}  // namespace

std::string serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  std::string out;
  emit_safetensors(tensors, metadata, "<memory>", [&](const char* p, size_t n) { out.append(p, n); });
  return out;
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source_name) {
  return parse(MemorySource(bytes), source_name);
}

SafetensorsFile load_safetensors(const std::string& path) { return parse(FileSource(path), path); }

void save_safetensors(const std::string& path, const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  const std::string tmp = temp_path_for(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "cannot create the temporary file '" + tmp + "': " + errno_text() + " (does the folder exist and is it writable?)");
  bool closed = false;
  try {
    emit_safetensors(tensors, metadata, path, [&](const char* p, size_t n) {
      while (n > 0) {
        const ssize_t put = ::write(fd, p, std::min<size_t>(n, 1u << 30));
        if (put < 0 && errno == EINTR) continue;
        if (put < 0) fail(path, "write to '" + tmp + "' failed: " + errno_text());
        p += put;
        n -= size_t(put);
      }
    });
    if (::fsync(fd) != 0) fail(path, "fsync of '" + tmp + "' failed: " + errno_text());
    closed = true;
    if (::close(fd) != 0) fail(path, "closing '" + tmp + "' failed: " + errno_text());
  } catch (...) {
    if (!closed) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    fail(path, "cannot rename '" + tmp + "' into place: " + why);
  }
}

}  // namespace cpets
