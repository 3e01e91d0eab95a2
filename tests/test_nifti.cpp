// io/nifti against files other tools wrote (nibabel's test data, nifti_tool, nibabel), with the
// truth read by nibabel (tools/make_nifti_fixtures.py → tests/fixtures/nifti/*.json).
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <nifti2_io.h>
#include <zlib.h>
#include <unistd.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cstring>
#include <iterator>
#include <limits>
#include <cmath>
#include <functional>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "io/nifti.h"

using namespace cpets::io;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kDir = std::string(CPETS_FIXTURES) + "/nifti/";

json load_json(const std::string& file) {
  std::ifstream f(kDir + file + ".json");
  REQUIRE_MESSAGE(f.good(), "missing fixture " << file << ".json (run tools/make_nifti_fixtures.py)");
  return json::parse(f);
}

std::vector<std::string> fixtures_with(bool error) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(kDir)) {
    const std::string n = e.path().filename().string();
    if (n.size() < 5 || n.substr(n.size() - 5) != ".json") continue;
    const std::string file = n.substr(0, n.size() - 5);
    if (load_json(file).contains("error") == error) names.push_back(file);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void check_affine(const Affine& got, const json& want, double tol) {
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 4; ++c) CHECK(got[r][c] == doctest::Approx(want[r][c].get<double>()).epsilon(tol).scale(1.0));
}

// value at nibabel index (i, j, k) = our (d, h, w) = (k, j, i)
float at_ijk(const Volume& v, const json& s) { return v.at(s[2].get<int>(), s[1].get<int>(), s[0].get<int>()); }

std::array<double, 3> world(const Affine& a, double i, double j, double k) {
  std::array<double, 3> w{};
  for (int r = 0; r < 3; ++r) w[r] = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3];
  return w;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("cpets_nifti_test_" + std::to_string(getpid()));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("nifti: every readable fixture matches what nibabel reads") {
  const auto files = fixtures_with(false);
  REQUIRE(files.size() >= 15);
  std::set<std::string> dtypes, sources;
  std::set<int> versions;
  bool saw_swapped = false, saw_pair = false, saw_scaled = false;
  for (const auto& file : files) {
    CAPTURE(file);
    const json want = load_json(file);
    NiftiInfo info;
    const Volume v = read_nifti(kDir + file, &info, {.allow_nonfinite = true});
    const auto& shape = want["shape"];
    CHECK(v.shape[0] == shape[2].get<int64_t>());
    CHECK(v.shape[1] == shape[1].get<int64_t>());
    CHECK(v.shape[2] == shape[0].get<int64_t>());
    check_affine(v.affine, want["affine"], 1e-6);
    CHECK(info.affine_source == want["affine_source"].get<std::string>());
    CHECK(info.orientation == want["orientation"].get<std::string>());
    CHECK(info.datatype == want["dtype"].get<std::string>());
    CHECK(info.version == want["version"].get<int>());
    CHECK(info.byte_swapped == want["big_endian"].get<bool>());  // this machine is little-endian
    CHECK(info.scl_slope == doctest::Approx(want["scl"][0].get<double>()));
    CHECK(info.scl_inter == doctest::Approx(want["scl"][1].get<double>()));
    CHECK(info.nan_count == want["nan_count"].get<int64_t>());
    CHECK(info.inf_count == want["inf_count"].get<int64_t>());
    CHECK(info.min == want["min"].get<float>());
    CHECK(info.max == want["max"].get<float>());
    double sum = 0;
    for (float x : v.data)
      if (std::isfinite(x)) sum += x;
    CHECK(sum == doctest::Approx(want["sum"].get<double>()).epsilon(1e-9));
    for (const auto& s : want["samples"]) {
      CAPTURE(s);
      CHECK(at_ijk(v, s) == s[3].get<float>());
    }
    dtypes.insert(info.datatype);
    sources.insert(info.affine_source);
    versions.insert(info.version);
    saw_swapped |= info.byte_swapped;
    saw_pair |= info.storage == "hdr/img";
    saw_scaled |= info.scl_slope != 1.0;
  }
  // The fixture set really covers what the reader claims to handle.
  CHECK(dtypes == std::set<std::string>{"uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                                        "float32", "float64"});
  CHECK(sources == std::set<std::string>{"sform", "qform", "pixdim"});
  CHECK(versions == std::set<int>{1, 2});
  CHECK(saw_swapped);
  CHECK(saw_pair);
  CHECK(saw_scaled);
}

TEST_CASE("nifti: slope 0 means unset, and the .img of a pair reads like its .hdr") {
  NiftiInfo info;
  const Volume f = read_nifti(kDir + "dt_float32.nii", &info);  // scl_slope 0, scl_inter 7
  CHECK(info.scl_slope == 1.0);
  CHECK(info.scl_inter == 0.0);
  CHECK(f.at(0, 0, 0) == doctest::Approx(-30 * 0.37f));
  const Volume a = read_nifti(kDir + "pair_uint16.hdr");
  const Volume b = read_nifti(kDir + "pair_uint16.img");
  CHECK(a.data == b.data);
}

TEST_CASE("nifti: malformed files fail with a message naming the file and the problem") {
  const auto files = fixtures_with(true);
  REQUIRE(files.size() >= 9);
  for (const auto& file : files) {
    CAPTURE(file);
    const std::string want = load_json(file)["error"].get<std::string>();
    const std::string msg = error_of([&] { read_nifti(kDir + file); });
    CAPTURE(msg);
    CHECK(msg.find(file) != std::string::npos);
    CHECK(msg.find(want) != std::string::npos);
  }
}

TEST_CASE("nifti: a trailing singleton dimension is fine, NaNs are allowed only on request") {
  CHECK(read_nifti(kDir + "trailing_singleton_4d.nii.gz").numel() == 7 * 6 * 5);
  const std::string msg = error_of([] { read_nifti(kDir + "example_nifti2_4d.nii.gz"); });
  CHECK(msg.find("32×20×12×2") != std::string::npos);
  NiftiInfo info;
  read_nifti(kDir + "nan3_inf1.nii.gz", &info, {.allow_nonfinite = true});
  CHECK(info.nan_count == 3);
  CHECK(info.inf_count == 1);
  CHECK_THROWS_WITH_AS(require_finite(info), doctest::Contains("3 NaN voxels"), std::runtime_error);
  CHECK(error_of([] { read_nifti(kDir + "does_not_exist.nii.gz"); }).find("does_not_exist.nii.gz': file not found") !=
        std::string::npos);
}

TEST_CASE("nifti: reorient_canonical matches nibabel's as_closest_canonical and keeps world positions") {
  int checked = 0;
  for (const auto& file : fixtures_with(false)) {
    const json want = load_json(file);
    if (!want.contains("canonical")) continue;
    CAPTURE(file);
    ++checked;
    const Volume v = read_nifti(kDir + file);
    const Volume c = reorient_canonical(v);
    const json& cw = want["canonical"];
    CHECK(c.shape[0] == cw["shape"][2].get<int64_t>());
    CHECK(c.shape[1] == cw["shape"][1].get<int64_t>());
    CHECK(c.shape[2] == cw["shape"][0].get<int64_t>());
    check_affine(c.affine, cw["affine"], 1e-6);
    CHECK(orientation_string(c.affine) == "RAS");
    for (const auto& s : cw["samples"]) CHECK(at_ijk(c, s) == s[3].get<float>());
    // Every voxel keeps its value at the same world position: map each old voxel centre through
    // the old affine, back through the inverse of the new one, and compare.
    Eigen::Matrix4d inv;
    for (int r = 0; r < 4; ++r)
      for (int k = 0; k < 4; ++k) inv(r, k) = c.affine[r][k];
    inv = inv.inverse().eval();
    int64_t mismatches = 0;
    for (int64_t d = 0; d < v.shape[0]; ++d)
      for (int64_t h = 0; h < v.shape[1]; ++h)
        for (int64_t w = 0; w < v.shape[2]; ++w) {
          const auto p = world(v.affine, w, h, d);
          const Eigen::Vector4d q = inv * Eigen::Vector4d(p[0], p[1], p[2], 1);
          const auto x = std::lround(q[0]), y = std::lround(q[1]), z = std::lround(q[2]);
          CHECK(std::abs(q[0] - x) < 1e-6);
          if (c.at(z, y, x) != v.at(d, h, w)) ++mismatches;
        }
    CHECK(mismatches == 0);
  }
  CHECK(checked >= 4);
}

TEST_CASE("nifti: write → read round trip, gzip and not, atomically") {
  TempDir tmp;
  Volume v = read_nifti(kDir + "be_float64_oblique.nii");
  v.data[5] = -1e-30f;  // a denormal-ish value survives bit for bit
  for (const std::string name : {"out.nii", "out.nii.gz"}) {
    CAPTURE(name);
    const std::string p = (tmp.path / name).string();
    write_nifti(p, v);
    NiftiInfo info;
    const Volume r = read_nifti(p, &info);
    CHECK(r.shape == v.shape);
    CHECK(r.data == v.data);
    CHECK(info.datatype == "float32");
    CHECK(info.affine_source == "sform");
    CHECK(info.sform_code == 1);
    CHECK(info.qform_code == 1);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) CHECK(r.affine[i][j] == doctest::Approx(v.affine[i][j]).epsilon(1e-6).scale(1.0));
    // The qform written alongside describes the same (rigid × zoom) grid.
    std::unique_ptr<nifti_image, void (*)(nifti_image*)> nim(nifti_image_read(p.c_str(), 0), nifti_image_free);
    REQUIRE(nim);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 4; ++j) CHECK(nim->qto_xyz.m[i][j] == doctest::Approx(v.affine[i][j]).epsilon(1e-5).scale(1.0));
    std::ifstream f(p, std::ios::binary);
    unsigned char magic[2] = {};
    f.read(reinterpret_cast<char*>(magic), 2);
    const bool is_gzip = magic[0] == 0x1f && magic[1] == 0x8b;
    CHECK(is_gzip == (name == "out.nii.gz"));
  }
  // Overwriting works and leaves no temporary files behind.
  write_nifti((tmp.path / "out.nii.gz").string(), make_volume({2, 3, 4}, 1.5f));
  CHECK(read_nifti((tmp.path / "out.nii.gz").string()).numel() == 24);
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path)) ++entries;
  CHECK(entries == 2);
  CHECK_THROWS_WITH_AS(write_nifti((tmp.path / "out.mgz").string(), v), doctest::Contains("out.mgz"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(write_nifti((tmp.path / "missing_dir" / "x.nii").string(), v),
                       doctest::Contains("missing_dir/x.nii"), std::runtime_error);
}

TEST_CASE("nifti: check_same_grid names both files") {
  const Volume a = read_nifti(kDir + "grid_a.nii.gz");
  CHECK_NOTHROW(check_same_grid(a, read_nifti(kDir + "grid_a_jitter.nii.gz"), {"a.nii.gz", "jitter.nii.gz"}));
  const std::string shifted =
      error_of([&] { check_same_grid(a, read_nifti(kDir + "grid_shifted.nii.gz"), {"t1.nii.gz", "av45.nii.gz"}); });
  CHECK(shifted.find("'t1.nii.gz' and 'av45.nii.gz'") != std::string::npos);
  CHECK(shifted.find("differ by 2 mm at [0][3]") != std::string::npos);
  const std::string other =
      error_of([&] { check_same_grid(a, read_nifti(kDir + "grid_other_shape.nii.gz"), {"t1.nii.gz", "pet.nii.gz"}); });
  CHECK(other.find("shapes 5×6×7 vs 4×6×7") != std::string::npos);
}

TEST_CASE("nifti: orientation codes of simple affines") {
  Affine a = scaling_affine(-2, 2, 2);
  CHECK(orientation_string(a) == "LAS");
  Affine p{};  // voxel x → world −y, voxel y → world z, voxel z → world x
  p[1][0] = -1, p[2][1] = 1, p[0][2] = 1, p[3][3] = 1;
  CHECK(orientation_string(p) == "PSR");
  Volume v = make_volume({2, 3, 4}, 0, p);  // (z, y, x) = (2, 3, 4)
  for (size_t i = 0; i < v.data.size(); ++i) v.data[i] = float(i);
  const Volume c = reorient_canonical(v);
  CHECK(c.shape == std::array<int64_t, 3>{3, 4, 2});  // x←old z (2), y←old x (4), z←old y (3)
  CHECK(orientation_string(c.affine) == "RAS");
  // new (x, y, z) = (old z, n_x − 1 − old x, old y): check one voxel by hand
  CHECK(c.at(/*z=old y*/ 1, /*y=3-old x*/ 3 - 2, /*x=old z*/ 1) == v.at(1, 1, 2));
}

namespace {
std::string slurp(const std::string& path) {  // plain or gzip
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f);
  std::string s;
  char buf[4096];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) s.append(buf, size_t(n));
  gzclose(f);
  return s;
}
}  // namespace

TEST_CASE("nifti: hostile header classes — 2-D, a qform that is not a rotation, zero/negative voxel sizes, NaN intercept, damaged gzip") {
  TempDir tmp;
  const std::string clean = slurp(kDir + "dt_int16.nii");  // NIfTI-1, little-endian
  REQUIRE(clean.size() > 352);
  auto put = [](std::string& b, size_t at, auto value) { std::memcpy(b.data() + at, &value, sizeof value); };
  auto with_qform = [&](std::string b) {  // the qform decides the affine: no sform
    put(b, 252, int16_t(1));
    put(b, 254, int16_t(0));
    return b;
  };
  auto error_for = [&](const std::string& bytes) {
    const std::string p = (tmp.path / "hostile.nii").string();
    std::ofstream(p, std::ios::binary) << bytes;
    return error_of([&] { read_nifti(p); });
  };
  CHECK(error_for(clean).empty());
  std::string two_d = clean;
  put(two_d, 40, int16_t(2));
  CHECK(contains(error_for(two_d), "is 2-D"));
  std::string bent = with_qform(clean);
  put(bent, 256, 0.9f), put(bent, 260, 0.9f), put(bent, 264, 0.0f);
  CHECK(contains(error_for(bent), "is not a rotation"));
  std::string nan_q = with_qform(clean);
  put(nan_q, 256, std::numeric_limits<float>::quiet_NaN());
  CHECK(contains(error_for(nan_q), "is not a rotation"));
  std::string zero = with_qform(clean);
  put(zero, 80, 0.0f);  // pixdim[1]
  CHECK(contains(error_for(zero), "pixdim[1] (a voxel size) is 0"));
  std::string negative = with_qform(clean);
  put(negative, 256, 0.0f), put(negative, 260, 0.0f), put(negative, 264, 0.0f);
  put(negative, 80, -2.5f);
  {
    const std::string p = (tmp.path / "negative.nii").string();
    std::ofstream(p, std::ios::binary) << negative;
    const Volume v = read_nifti(p);
    const auto vs = v.voxel_size();
    CHECK(std::find_if(vs.begin(), vs.end(), [](double x) { return std::abs(x - 2.5) < 1e-6; }) != vs.end());
  }
  std::string nan_inter = clean;
  put(nan_inter, 112, 2.0f), put(nan_inter, 116, std::numeric_limits<float>::quiet_NaN());
  CHECK(contains(error_for(nan_inter), "scl_inter is NaN"));
  // A damaged deflate stream is reported as such, not as a short file.
  std::ifstream in(kDir + "nifti2_scaled.nii.gz", std::ios::binary);  // the compressed bytes (slurp inflates)
  std::string gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(gz.size() > 100);
  for (size_t i = 20; i < std::min<size_t>(gz.size() - 8, 60); ++i) gz[i] = char(gz[i] ^ 0x5A);
  const std::string p = (tmp.path / "damaged.nii.gz").string();
  std::ofstream(p, std::ios::binary) << gz;
  const std::string e = error_of([&] { read_nifti(p); });
  CHECK(contains(e, "damaged.nii.gz"));
  CAPTURE(e);
  CHECK(contains(e, "corrupt gzip"));
}

TEST_CASE("nifti: a small gzip file whose header claims gigabytes fails without allocating them") {
  // fuzz_nifti found a 2 MB input that made the reader allocate 2.1 GB before noticing the data
  // was short. Header: 1024 × 1024 × 512 float32 (2 GiB); payload: 2 MB of incompressible bytes,
  // enough to pass the deflate-ratio check (≤ 1,100:1).
  TempDir tmp;
  std::string file = slurp(kDir + "dt_int16.nii").substr(0, 352);
  auto put = [&](size_t at, auto value) { std::memcpy(file.data() + at, &value, sizeof value); };
  put(40, int16_t(3)), put(42, int16_t(1024)), put(44, int16_t(1024)), put(46, int16_t(512)), put(48, int16_t(1));
  put(70, int16_t(16)), put(72, int16_t(32));  // FLOAT32, 32 bits
  put(108, 352.0f);                             // vox_offset
  uint64_t state = 88172645463325252ull;        // xorshift: incompressible bytes
  for (int i = 0; i < (2 << 20); ++i) {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    file.push_back(char(state));
  }
  const std::string p = (tmp.path / "claims_2gib.nii.gz").string();
  gzFile f = gzopen(p.c_str(), "wb1");
  REQUIRE(f);
  REQUIRE(gzwrite(f, file.data(), unsigned(file.size())) == int(file.size()));
  gzclose(f);
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  const std::string e = error_of([&] { read_nifti(p); });
  getrusage(RUSAGE_SELF, &after);
  CAPTURE(e);
  CHECK(contains(e, "claims_2gib.nii.gz"));
  CHECK(contains(e, "truncated"));
  // Peak resident memory (kB) grew by far less than the 2 GiB the header claims.
  CHECK(after.ru_maxrss - before.ru_maxrss < 512 * 1024);
}

TEST_CASE("nifti: corrupted headers and truncations give runtime_errors, never a crash") {
  TempDir tmp;
  const std::string p = (tmp.path / "fuzz.nii").string();
  uint64_t state = 12345;
  auto next = [&] {  // xorshift64*
    state ^= state >> 12, state ^= state << 25, state ^= state >> 27;
    return state * 2685821657736338717ull;
  };
  int read_ok = 0, rejected = 0;
  for (const std::string src : {"dt_int16.nii", "nifti2_scaled.nii.gz", "be_float64_oblique.nii"}) {
    const std::string clean = slurp(kDir + src);
    const size_t header = clean.compare(4, 3, "n+2") == 0 ? 544 : 352;
    for (int it = 0; it < 400; ++it) {
      std::string bytes = clean;
      if (it % 4 == 3) {
        bytes.resize(next() % bytes.size());
      } else {
        for (int k = 0, n = 1 + int(next() % 4); k < n; ++k) {
          const size_t pos = next() % header;
          bytes[pos] = (it % 2) ? char(next()) : char(bytes[pos] ^ (1 << (next() % 8)));
        }
      }
      std::ofstream(p, std::ios::binary) << bytes;
      try {
        NiftiInfo info;
        const Volume v = read_nifti(p, &info, {.allow_nonfinite = true});
        CHECK(int64_t(v.data.size()) == v.numel());
        ++read_ok;
      } catch (const std::runtime_error& e) {
        CAPTURE(e.what());
        CHECK(std::string(e.what()).find("fuzz.nii") != std::string::npos);
        ++rejected;
      }
    }
  }
  MESSAGE("fuzz: " << read_ok << " corrupted files still read, " << rejected << " rejected with a message");
  CHECK(rejected > 300);
}
