#include "io/nifti.h"

#include <nifti2_io.h>
#include <unistd.h>
#include <zlib.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace cpets::io {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error("NIfTI file '" + path + "': " + what);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) return false;
  return true;
}

struct NimDeleter {
  void operator()(nifti_image* nim) const { nifti_image_free(nim); }
};
using NimPtr = std::unique_ptr<nifti_image, NimDeleter>;

struct GzCloser {
  void operator()(gzFile_s* f) const { gzclose(f); }
};
using GzPtr = std::unique_ptr<gzFile_s, GzCloser>;

// The header file of a path given as .nii, .nii.gz, .hdr(.gz) or .img(.gz).
std::string header_path(const std::string& path) {
  if (ends_with(path, ".img")) return path.substr(0, path.size() - 4) + ".hdr";
  if (ends_with(path, ".img.gz")) return path.substr(0, path.size() - 7) + ".hdr.gz";
  return path;
}

std::string printable_prefix(const unsigned char* bytes, int n) {
  std::string s;
  for (int i = 0; i < n && i < 16; ++i) s += std::isprint(bytes[i]) ? static_cast<char>(bytes[i]) : '.';
  return s;
}

int32_t read_i32(const unsigned char* p, bool swap) {
  uint32_t u;
  std::memcpy(&u, p, 4);
  if (swap) u = __builtin_bswap32(u);
  int32_t v;
  std::memcpy(&v, &u, 4);
  return v;
}

template <typename T>
T read_raw(const unsigned char* p, bool swap) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, p, sizeof(T));
  if (swap) std::reverse(b, b + sizeof(T));
  T v;
  std::memcpy(&v, b, sizeof(T));
  return v;
}

// The header fields we validate ourselves: NIfTI-clib trusts them and can crash (or print to
// stderr and fail vaguely) on a corrupt header.
struct RawHeader {
  int version = 1;
  bool swapped = false;
  int64_t dim[8] = {};
  int datatype = 0, bitpix = 0;
  double vox_offset = 0;
  double pixdim[8] = {};
  double scl_slope = 0, scl_inter = 0;
  int qform_code = 0, sform_code = 0;
  double quatern[3] = {};  // b, c, d
};

RawHeader decode_header(const unsigned char* b, int version, bool swap) {
  RawHeader h;
  h.version = version;
  h.swapped = swap;
  if (version == 1) {
    for (int i = 0; i < 8; ++i) h.dim[i] = read_raw<int16_t>(b + 40 + 2 * i, swap);
    h.datatype = read_raw<int16_t>(b + 70, swap);
    h.bitpix = read_raw<int16_t>(b + 72, swap);
    for (int i = 0; i < 8; ++i) h.pixdim[i] = read_raw<float>(b + 76 + 4 * i, swap);
    h.vox_offset = read_raw<float>(b + 108, swap);
    h.scl_slope = read_raw<float>(b + 112, swap);
    h.scl_inter = read_raw<float>(b + 116, swap);
    h.qform_code = read_raw<int16_t>(b + 252, swap);
    h.sform_code = read_raw<int16_t>(b + 254, swap);
    for (int i = 0; i < 3; ++i) h.quatern[i] = read_raw<float>(b + 256 + 4 * i, swap);
  } else {
    h.datatype = read_raw<int16_t>(b + 12, swap);
    h.bitpix = read_raw<int16_t>(b + 14, swap);
    for (int i = 0; i < 8; ++i) h.dim[i] = read_raw<int64_t>(b + 16 + 8 * i, swap);
    for (int i = 0; i < 8; ++i) h.pixdim[i] = read_raw<double>(b + 104 + 8 * i, swap);
    h.vox_offset = static_cast<double>(read_raw<int64_t>(b + 168, swap));
    h.scl_slope = read_raw<double>(b + 176, swap);
    h.scl_inter = read_raw<double>(b + 184, swap);
    h.qform_code = read_raw<int32_t>(b + 344, swap);
    h.sform_code = read_raw<int32_t>(b + 348, swap);
    for (int i = 0; i < 3; ++i) h.quatern[i] = read_raw<double>(b + 352 + 8 * i, swap);
  }
  return h;
}

// Our own check of sizeof_hdr and magic before NIfTI-clib sees the file, so that a text file or
// an ANALYZE header gets a message that says what it is instead of library noise on stderr.
RawHeader check_header_bytes(const std::string& path, const std::string& hdr) {
  GzPtr f(gzopen(hdr.c_str(), "rb"));
  if (!f) fail(path, "cannot open header file '" + hdr + "' (" + std::strerror(errno) + ")");
  unsigned char b[544] = {};
  const int n = gzread(f.get(), b, 540);
  if (n < 0) {  // a damaged deflate stream, not a short file
    int err = Z_OK;
    const char* msg = gzerror(f.get(), &err);
    fail(path, std::string("corrupt gzip file (zlib: ") + msg + "); the file is damaged: copy or export it again");
  }
  if (n < 4)
    fail(path, "not a NIfTI file: only " + std::to_string(std::max(n, 0)) + " bytes (a NIfTI-1 header has 348)");
  const int32_t native = read_i32(b, false), swapped = read_i32(b, true);
  const auto is = [&](int32_t v) { return native == v || swapped == v; };
  if (is(348)) {
    if (n < 348) fail(path, "not a NIfTI file: header truncated to " + std::to_string(n) + " of 348 bytes");
    const bool magic1 = (std::memcmp(b + 344, "n+1\0", 4) == 0 || std::memcmp(b + 344, "ni1\0", 4) == 0);
    if (!magic1)
      fail(path, "not a NIfTI file: sizeof_hdr is 348 but the magic at byte 344 is '" + printable_prefix(b + 344, 4) +
                     "' instead of 'n+1' or 'ni1' (an ANALYZE 7.5 header? its orientation is ambiguous; "
                     "convert it to NIfTI with a tool that knows its origin convention)");
    return decode_header(b, 1, native != 348);
  }
  if (is(540)) {
    if (n < 540) fail(path, "not a NIfTI file: NIfTI-2 header truncated to " + std::to_string(n) + " of 540 bytes");
    const bool magic2 = (std::memcmp(b + 4, "n+2\0", 4) == 0 || std::memcmp(b + 4, "ni2\0", 4) == 0);
    if (!magic2) fail(path, "not a NIfTI file: sizeof_hdr is 540 but the magic at byte 4 is not 'n+2' or 'ni2'");
    return decode_header(b, 2, native != 540);
  }
  fail(path, "not a NIfTI file: the first 4 bytes (sizeof_hdr) read " + std::to_string(native) +
                 ", a NIfTI-1 header starts with 348 and a NIfTI-2 header with 540 (file starts with \"" +
                 printable_prefix(b, n) + "\")");
}

int bytes_per_voxel(int dt);  // 0 for codes we do not read

std::string datatype_label(int dt) {
  const char* s = nifti_datatype_string(dt);
  return std::string(s ? s : "UNKNOWN") + " (code " + std::to_string(dt) + ")";
}

// Rejects what would make NIfTI-clib misbehave or what we do not read, with a precise message.
void validate_header(const std::string& path, const RawHeader& h) {
  const int64_t ndim = h.dim[0];
  if (ndim < 1 || ndim > 7) fail(path, "corrupt header: dim[0] = " + std::to_string(ndim) + " (must be 1..7)");
  std::string dims;
  for (int i = 1; i <= ndim; ++i) dims += (i > 1 ? "×" : "") + std::to_string(h.dim[i]);
  int64_t nvox = 1;
  for (int i = 1; i <= ndim; ++i) {
    if (h.dim[i] < 1 || h.dim[i] > (int64_t{1} << 31))
      fail(path, "corrupt header: dim[" + std::to_string(i) + "] = " + std::to_string(h.dim[i]) + " (dims " + dims + ")");
    if (__builtin_mul_overflow(nvox, h.dim[i], &nvox) || nvox > (int64_t{1} << 40))
      fail(path, "corrupt header: dims " + dims + " give an absurd number of voxels");
  }
  if (ndim < 3)
    fail(path, "is " + std::to_string(ndim) + "-D (" + dims + ") but a 3-D volume is required (a single slice or a "
                   "profile is not a brain volume)");
  for (int i = 4; i <= ndim; ++i)
    if (h.dim[i] > 1)
      fail(path, "is " + std::to_string(ndim) + "-D (" + dims +
                     ") but a 3-D volume is required; extract one volume first (e.g. fslroi or nibabel's slicer)");
  const int nbyper = bytes_per_voxel(h.datatype);
  if (nbyper == 0)
    fail(path, "datatype " + datatype_label(h.datatype) +
                   " is not supported: cpets reads real scalar volumes (uint8, int8, int16, uint16, int32, uint32, "
                   "int64, uint64, float32, float64), not complex, RGB or 128-bit data");
  if (h.bitpix != 8 * nbyper)
    fail(path, "corrupt header: bitpix is " + std::to_string(h.bitpix) + " but datatype " + datatype_label(h.datatype) +
                   " has " + std::to_string(8 * nbyper) + " bits");
  if (!std::isfinite(h.vox_offset) || h.vox_offset < 0 || h.vox_offset > double(int64_t{1} << 40))
    fail(path, "corrupt header: vox_offset = " + std::to_string(h.vox_offset));
  for (int i = 1; i <= 3; ++i)
    if (!std::isfinite(h.pixdim[i]))
      fail(path, "corrupt header: pixdim[" + std::to_string(i) + "] is not finite");
  if (!std::isfinite(h.pixdim[0])) fail(path, "corrupt header: pixdim[0] (qfac) is not finite");
  // The qform is the affine when there is no sform: its quaternion must be a rotation and its
  // voxel sizes non-zero (NIfTI-clib would silently renormalise the one and turn the other into
  // 1 mm; negative sizes are read as their magnitude, as nibabel does).
  if (h.qform_code > 0 && h.sform_code <= 0) {
    const double b = h.quatern[0], c = h.quatern[1], d = h.quatern[2];
    const double norm2 = b * b + c * c + d * d;
    if (!std::isfinite(norm2) || norm2 > 1.0 + 1e-6)
      fail(path, "corrupt header: qform_code is " + std::to_string(h.qform_code) + " but the quaternion (b, c, d) = (" +
                     std::to_string(b) + ", " + std::to_string(c) + ", " + std::to_string(d) +
                     ") is not a rotation (b² + c² + d² must be ≤ 1); fix the qform, or give the file an sform");
    for (int i = 1; i <= 3; ++i)
      if (h.pixdim[i] == 0)
        fail(path, "corrupt header: qform_code is " + std::to_string(h.qform_code) + " but pixdim[" + std::to_string(i) +
                       "] (a voxel size) is 0");
  }
  // nibabel refuses a NaN intercept with a usable slope; so do we (a NaN slope means "no scaling").
  if (std::isfinite(h.scl_slope) && h.scl_slope != 0 && std::isnan(h.scl_inter))
    fail(path, "corrupt header: scl_slope is " + std::to_string(h.scl_slope) +
                   " but scl_inter is NaN; set scl_inter to 0 (or scl_slope to 0 for unscaled data)");
}

const char* datatype_name(int dt) {
  switch (dt) {
    case DT_UINT8: return "uint8";
    case DT_INT8: return "int8";
    case DT_INT16: return "int16";
    case DT_UINT16: return "uint16";
    case DT_INT32: return "int32";
    case DT_UINT32: return "uint32";
    case DT_INT64: return "int64";
    case DT_UINT64: return "uint64";
    case DT_FLOAT32: return "float32";
    case DT_FLOAT64: return "float64";
    default: return nullptr;
  }
}

int bytes_per_voxel(int dt) {
  switch (dt) {
    case DT_UINT8: case DT_INT8: return 1;
    case DT_INT16: case DT_UINT16: return 2;
    case DT_INT32: case DT_UINT32: case DT_FLOAT32: return 4;
    case DT_INT64: case DT_UINT64: case DT_FLOAT64: return 8;
    default: return 0;
  }
}

// (nx, ny, nz); validate_header has already rejected 4-D data and bad dims.
std::array<int64_t, 3> spatial_dims(const nifti_image& nim) {
  auto d = [&](int i) { return i <= nim.dim[0] ? nim.dim[i] : int64_t{1}; };
  return {d(1), d(2), d(3)};
}

// Reads `bytes` bytes of voxel data at `offset` of the (possibly gzipped) data file, detecting
// truncation ourselves: NIfTI-clib would only print a warning and hand back partial data.
std::vector<unsigned char> read_voxel_bytes(const std::string& path, const std::string& data_file, int64_t offset,
                                            int64_t bytes, const std::string& what) {
  std::error_code ec;
  if (!fs::exists(data_file, ec))
    fail(path, "image data file '" + data_file + "' not found (a .hdr without its .img?)");
  const int64_t file_size = static_cast<int64_t>(fs::file_size(data_file, ec));
  const bool gz = nifti_is_gzfile(data_file.c_str());
  const std::string promise = "the header promises " + what + " = " + std::to_string(bytes) +
                              " bytes of voxel data from offset " + std::to_string(offset);
  const std::string holder = data_file == path ? "the file" : "'" + data_file + "'";
  if (!gz && file_size < offset + bytes)
    fail(path, "truncated: " + promise + " but " + holder + " has only " + std::to_string(std::max<int64_t>(0, file_size - offset)) +
                   " bytes after that offset");
  // deflate cannot compress better than ~1032:1, so this catches absurd headers before allocating.
  if (gz && bytes > 1100 * (file_size + 1))
    fail(path, "truncated or corrupt: " + promise + " but " + holder + " is only " + std::to_string(file_size) +
                   " bytes of gzip");
  GzPtr f(gzopen(data_file.c_str(), "rb"));
  if (!f) fail(path, "cannot open image data file '" + data_file + "' (" + std::strerror(errno) + ")");
  gzbuffer(f.get(), 1 << 20);
  if (offset > 0 && gzseek(f.get(), offset, SEEK_SET) != offset)
    fail(path, "truncated: cannot reach the voxel data at offset " + std::to_string(offset));
  // The buffer grows with the data that arrives instead of being sized from the header's promise:
  // a small gzip file whose header claims gigabytes fails after reading what it holds, never
  // after allocating (and zero-filling) what it claims.
  std::vector<unsigned char> buf;
  int64_t got = 0;
  while (got < bytes) {
    if (got == static_cast<int64_t>(buf.size()))
      buf.resize(static_cast<size_t>(std::min<int64_t>(bytes, std::max<int64_t>(2 * got, int64_t(64) << 20))));
    const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(static_cast<int64_t>(buf.size()) - got, 1 << 30));
    const int n = gzread(f.get(), buf.data() + got, chunk);
    if (n <= 0) {
      int err = Z_OK;
      const char* msg = gzerror(f.get(), &err);
      if (n < 0 && err != Z_BUF_ERROR) fail(path, std::string("corrupt gzip stream (zlib: ") + msg + ")");
      break;
    }
    got += n;
  }
  if (got < bytes)
    fail(path, "truncated: " + promise + " but only " + std::to_string(got) + " bytes could be read" +
                   (gz ? " from the gzip stream of " : " from ") + holder);
  return buf;
}

template <typename T>
void convert(const unsigned char* raw, int64_t n, double slope, double inter, bool scale, float* out) {
  const T* p = reinterpret_cast<const T*>(raw);
  for (int64_t i = 0; i < n; ++i) {
    double x = static_cast<double>(p[i]);
    if (scale) x = x * slope + inter;
    out[i] = static_cast<float>(x);
  }
}

void convert_any(int dt, const unsigned char* raw, int64_t n, double slope, double inter, bool scale, float* out) {
  switch (dt) {
    case DT_UINT8: return convert<uint8_t>(raw, n, slope, inter, scale, out);
    case DT_INT8: return convert<int8_t>(raw, n, slope, inter, scale, out);
    case DT_INT16: return convert<int16_t>(raw, n, slope, inter, scale, out);
    case DT_UINT16: return convert<uint16_t>(raw, n, slope, inter, scale, out);
    case DT_INT32: return convert<int32_t>(raw, n, slope, inter, scale, out);
    case DT_UINT32: return convert<uint32_t>(raw, n, slope, inter, scale, out);
    case DT_INT64: return convert<int64_t>(raw, n, slope, inter, scale, out);
    case DT_UINT64: return convert<uint64_t>(raw, n, slope, inter, scale, out);
    case DT_FLOAT32: return convert<float>(raw, n, slope, inter, scale, out);
    case DT_FLOAT64: return convert<double>(raw, n, slope, inter, scale, out);
  }
}

Affine from_dmat44(const nifti_dmat44& m) {
  Affine a{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) a[r][c] = m.m[r][c];
  return a;
}

double det3(const Affine& a) {
  return a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
         a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
}

// sform if its code is set, else qform if its code is set, else NIfTI method 1 (pixdim scaling).
Affine choose_affine(const std::string& path, const nifti_image& nim, std::string& source) {
  if (nim.sform_code > 0) {
    source = "sform";
    Affine a = from_dmat44(nim.sto_xyz);
    if (!std::isfinite(det3(a)) || std::abs(det3(a)) < 1e-12)
      fail(path, "sform_code is " + std::to_string(nim.sform_code) + " but the sform matrix (srow_x/y/z) is singular");
    return a;
  }
  if (nim.qform_code > 0) {
    source = "qform";
    if (nim.dx < 0 || nim.dy < 0 || nim.dz < 0) {  // NIfTI-clib made these 1 mm; nibabel reads |pixdim|
      const nifti_dmat44 m = nifti_quatern_to_dmat44(nim.quatern_b, nim.quatern_c, nim.quatern_d, nim.qoffset_x,
                                                     nim.qoffset_y, nim.qoffset_z, std::abs(nim.dx), std::abs(nim.dy),
                                                     std::abs(nim.dz), nim.qfac);
      return from_dmat44(m);
    }
    return from_dmat44(nim.qto_xyz);
  }
  source = "pixdim";
  auto spacing = [](double d) { return (std::isfinite(d) && d > 0) ? d : 1.0; };
  return scaling_affine(spacing(nim.dx), spacing(nim.dy), spacing(nim.dz));
}

std::string storage_kind(const nifti_image& nim) {
  const std::string iname = nim.iname ? nim.iname : "";
  const bool gz = nifti_is_gzfile(iname.c_str());
  const std::string fname = nim.fname ? nim.fname : "";
  const bool pair = fname != iname;
  return pair ? (gz ? "hdr/img.gz" : "hdr/img") : (gz ? "nii.gz" : "nii");
}

// NIfTI-clib reports problems on stderr when its debug level is above 0; we report them ourselves.
void quiet_library() {
  static const bool once = [] {
    nifti_set_debug_level(0);
    return true;
  }();
  (void)once;
}

}  // namespace

Volume read_nifti(const std::string& path, NiftiInfo* info_out, NiftiReadOptions opt) {
  quiet_library();
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "file not found");
  if (fs::is_directory(path, ec)) fail(path, "is a directory, not a NIfTI file");
  const std::string hdr = header_path(path);
  if (!fs::exists(hdr, ec)) fail(path, "header file '" + hdr + "' of the .hdr/.img pair not found");
  const RawHeader raw_header = check_header_bytes(path, hdr);
  validate_header(path, raw_header);
  const int version = raw_header.version;

  NimPtr nim(nifti_image_read(path.c_str(), 0));
  if (!nim) fail(path, "NIfTI-clib could not parse the header (inconsistent pair names or a corrupt header)");
  NiftiInfo info;
  info.path = path;
  info.version = version;
  info.storage = storage_kind(*nim);
  info.byte_swapped = nim->byteorder != nifti_short_order();
  info.sform_code = nim->sform_code;
  info.qform_code = nim->qform_code;

  const char* dt = datatype_name(nim->datatype);
  if (!dt) fail(path, "datatype " + datatype_label(nim->datatype) + " is not supported");  // validated above
  info.datatype = dt;
  const auto [nx, ny, nz] = spatial_dims(*nim);
  const int64_t nvox = nx * ny * nz;
  const std::string what = std::to_string(nx) + "×" + std::to_string(ny) + "×" + std::to_string(nz) + " " + dt;
  std::vector<unsigned char> raw =
      read_voxel_bytes(path, nim->iname ? nim->iname : path, nim->iname_offset, nvox * nim->nbyper, what);
  if (info.byte_swapped && nim->nbyper > 1) nifti_swap_Nbytes(nvox, nim->nbyper, raw.data());

  // slope 0 (or non-finite) means "no scaling", as in the standard and nibabel.
  const bool scale = std::isfinite(nim->scl_slope) && nim->scl_slope != 0 &&
                     !(nim->scl_slope == 1 && (nim->scl_inter == 0 || !std::isfinite(nim->scl_inter)));
  info.scl_slope = scale ? nim->scl_slope : 1.0;
  info.scl_inter = scale && std::isfinite(nim->scl_inter) ? nim->scl_inter : 0.0;

  Volume v;
  v.shape = {nz, ny, nx};
  v.data.resize(static_cast<size_t>(nvox));
  convert_any(nim->datatype, raw.data(), nvox, info.scl_slope, info.scl_inter, scale, v.data.data());
  v.affine = choose_affine(path, *nim, info.affine_source);
  try {
    info.orientation = orientation_string(v.affine);
  } catch (const std::exception& e) {
    fail(path, "the " + info.affine_source + " affine is unusable (" + e.what() + "; pixdim " +
                   std::to_string(nim->dx) + ", " + std::to_string(nim->dy) + ", " + std::to_string(nim->dz) + ")");
  }

  bool any_finite = false;
  for (float x : v.data) {
    if (std::isnan(x)) {
      ++info.nan_count;
    } else if (std::isinf(x)) {
      ++info.inf_count;
    } else if (!any_finite) {
      info.min = info.max = x;
      any_finite = true;
    } else {
      info.min = std::min(info.min, x);
      info.max = std::max(info.max, x);
    }
  }
  if (info_out) *info_out = info;
  if (!opt.allow_nonfinite) require_finite(info);
  return v;
}

void require_finite(const NiftiInfo& info) {
  if (info.nan_count == 0 && info.inf_count == 0) return;
  std::string counts;
  if (info.nan_count) counts += std::to_string(info.nan_count) + " NaN voxel" + (info.nan_count > 1 ? "s" : "");
  if (info.inf_count)
    counts += (counts.empty() ? "" : " and ") + std::to_string(info.inf_count) + " infinite voxel" +
              (info.inf_count > 1 ? "s" : "");
  fail(info.path, counts + "; replace them (e.g. by 0) before using the volume");
}

void write_nifti(const std::string& path, const Volume& v) {
  const bool gz = ends_with(path, ".nii.gz");
  if (!gz && !ends_with(path, ".nii"))
    throw std::runtime_error("write_nifti: '" + path + "' must end in .nii or .nii.gz");
  if (v.numel() <= 0 || static_cast<int64_t>(v.data.size()) != v.numel())
    throw std::runtime_error("write_nifti: '" + path + "': volume of shape " + shape_string(v.shape) + " holds " +
                             std::to_string(v.data.size()) + " values");
  quiet_library();
  const int64_t dims[8] = {3, v.shape[2], v.shape[1], v.shape[0], 1, 1, 1, 1};
  NimPtr nim(nifti_make_new_nim(dims, DT_FLOAT32, 0));
  if (!nim) throw std::runtime_error("write_nifti: '" + path + "': NIfTI-clib could not create a header");
  nifti_dmat44 m{};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) m.m[r][c] = v.affine[r][c];
  nim->sto_xyz = m;
  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
  double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
  nifti_dmat44_to_quatern(m, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
  nim->quatern_b = qb, nim->quatern_c = qc, nim->quatern_d = qd;
  nim->qoffset_x = qx, nim->qoffset_y = qy, nim->qoffset_z = qz;
  nim->qfac = qfac;
  nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
  const auto vs = v.voxel_size();
  nim->dx = nim->pixdim[1] = vs[0];
  nim->dy = nim->pixdim[2] = vs[1];
  nim->dz = nim->pixdim[3] = vs[2];
  nim->xyz_units = NIFTI_UNITS_MM;
  nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
  nifti_1_header hdr{};
  if (nifti_convert_nim2n1hdr(nim.get(), &hdr) != 0)
    throw std::runtime_error("write_nifti: '" + path + "': NIfTI-clib could not build the NIfTI-1 header");
  hdr.vox_offset = 352;
  std::memcpy(hdr.magic, "n+1\0", 4);

  const fs::path target(path);
  const std::string name = target.filename().string();
  const fs::path tmp = target.parent_path() / ("." + name + ".tmp" + std::to_string(getpid()) + (gz ? ".nii.gz" : ".nii"));
  auto write_all = [&]() -> std::string {
    // gzip level 1, nibabel's default: 4× faster than level 6 on a 28 MB volume.
    gzFile f = gzopen(tmp.c_str(), gz ? "wb1" : "wbT");
    if (!f) return std::string("cannot create '") + tmp.string() + "' (" + std::strerror(errno) + ")";
    const char extender[4] = {0, 0, 0, 0};
    const int64_t bytes = v.numel() * 4;
    bool ok = gzwrite(f, &hdr, sizeof hdr) == static_cast<int>(sizeof hdr) && gzwrite(f, extender, 4) == 4;
    for (int64_t done = 0; ok && done < bytes;) {
      const unsigned chunk = static_cast<unsigned>(std::min<int64_t>(bytes - done, 1 << 30));
      ok = gzwrite(f, reinterpret_cast<const char*>(v.data.data()) + done, chunk) == static_cast<int>(chunk);
      done += chunk;
    }
    const int closed = gzclose(f);
    if (!ok || closed != Z_OK) return "writing '" + tmp.string() + "' failed (disk full?)";
    return "";
  };
  const std::string err = write_all();
  std::error_code ec;
  if (!err.empty()) {
    fs::remove(tmp, ec);
    throw std::runtime_error("write_nifti: '" + path + "': " + err);
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error("write_nifti: '" + path + "': cannot rename the temporary file into place (" +
                             ec.message() + ")");
  }
}

AxisOrientation axis_orientation(const Affine& a) {
  Eigen::Matrix3d rs;
  for (int c = 0; c < 3; ++c) {
    double zoom = std::sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
    if (zoom == 0) zoom = 1;
    for (int r = 0; r < 3; ++r) rs(r, c) = a[r][c] / zoom;
  }
  // The closest shear-free matrix (polar decomposition) tells which world axis each voxel axis
  // follows; ties are broken by taking voxel axes in order and retiring used world axes.
  Eigen::JacobiSVD<Eigen::Matrix3d> svd(rs, Eigen::ComputeFullU | Eigen::ComputeFullV);
  const Eigen::Vector3d sv = svd.singularValues();
  if (!(sv(2) >= 1e-9 * std::max(1.0, sv(0))))
    throw std::runtime_error("orientation: the affine's 3×3 part is singular, the voxel axes have no direction");
  Eigen::Matrix3d r = svd.matrixU() * svd.matrixV().transpose();
  AxisOrientation o;
  for (int in = 0; in < 3; ++in) {
    int out = 0;
    for (int w = 1; w < 3; ++w)
      if (std::abs(r(w, in)) > std::abs(r(out, in))) out = w;
    o.world_axis[in] = out;
    o.sign[in] = r(out, in) < 0 ? -1 : 1;
    r.row(out).setZero();
  }
  return o;
}

std::string orientation_string(const Affine& a) {
  static const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
  const AxisOrientation o = axis_orientation(a);
  std::string s;
  for (int i = 0; i < 3; ++i) s += o.sign[i] > 0 ? pos[o.world_axis[i]] : neg[o.world_axis[i]];
  return s;
}

Volume reorient_canonical(const Volume& v) {
  const AxisOrientation o = axis_orientation(v.affine);
  const std::array<int64_t, 3> old_n{v.shape[2], v.shape[1], v.shape[0]};  // (x, y, z)
  std::array<int64_t, 3> new_n{};
  // T maps a new voxel index (x', y', z', 1) to the old one, so the new affine is A·T.
  Affine t{};
  t[3][3] = 1;
  for (int i = 0; i < 3; ++i) {
    const int w = o.world_axis[i];
    new_n[w] = old_n[i];
    t[i][w] = o.sign[i];
    t[i][3] = o.sign[i] < 0 ? static_cast<double>(old_n[i] - 1) : 0.0;
  }
  Volume out;
  out.shape = {new_n[2], new_n[1], new_n[0]};
  out.data.resize(v.data.size());
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) {
      double s = 0;
      for (int k = 0; k < 4; ++k) s += v.affine[r][k] * t[k][c];
      out.affine[r][c] = s;
    }
  std::array<int64_t, 3> n{}, old{};
  for (n[2] = 0; n[2] < new_n[2]; ++n[2])
    for (n[1] = 0; n[1] < new_n[1]; ++n[1])
      for (n[0] = 0; n[0] < new_n[0]; ++n[0]) {
        for (int i = 0; i < 3; ++i) {
          const int64_t m = n[o.world_axis[i]];
          old[i] = o.sign[i] > 0 ? m : old_n[i] - 1 - m;
        }
        out.at(n[2], n[1], n[0]) = v.at(old[2], old[1], old[0]);
      }
  return out;
}

void check_same_grid(const Volume& a, const Volume& b, const std::array<std::string, 2>& names, double tol_mm) {
  const std::string both = "'" + names[0] + "' and '" + names[1] + "'";
  if (a.shape != b.shape)
    throw std::runtime_error(both + " are not on the same grid: shapes " + shape_string(a.shape) + " vs " +
                             shape_string(b.shape) + "; resample one onto the other's grid");
  double worst = 0;
  int wr = 0, wc = 0;
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) {
      const double d = std::abs(a.affine[r][c] - b.affine[r][c]);
      if (!(d <= worst)) worst = d, wr = r, wc = c;  // NaN counts as a mismatch
    }
  if (worst > tol_mm || std::isnan(worst)) {
    std::ostringstream msg;
    msg << both << " are not on the same grid: their affines differ by " << worst << " mm at [" << wr << "][" << wc
        << "] (" << a.affine[wr][wc] << " vs " << b.affine[wr][wc] << ", tolerance " << tol_mm
        << " mm); resample one onto the other's grid";
    throw std::runtime_error(msg.str());
  }
}

}  // namespace cpets::io
