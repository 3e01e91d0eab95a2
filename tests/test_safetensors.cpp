// safetensors I/O. Interop is checked in both directions against the Python `safetensors` package
// through fixtures made by tools/make_safetensors_fixture.py:
//   Python → cpets: torch_written.safetensors is read and compared bit for bit with the float32
//                   values PyTorch's own conversion gives (torch_written.json);
//   cpets → Python: cpets writes the formula tensors of canonical_f32.safetensors and the bytes must
//                   equal the package's file (so Python reads ours exactly as its own). The script's
//                   --verify mode loads a cpets-written file in Python as a manual cross-check.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/safetensors.h"

using namespace cpets;
namespace fs = std::filesystem;

namespace {

const std::string kDir = std::string(CPETS_FIXTURES) + "/safetensors/";

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE_MESSAGE(f.good(), "cannot open " << path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

// A fresh folder per test case, removed afterwards.
struct TempDir {
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() / ("cpets_st_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
  fs::path path;
};

// Same formula as the fixture script: value(i) = ((7 i) mod 11 − 5) / 8.
Tensor formula(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = float((i * 7) % 11 - 5) / 8.f;
  return t;
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// A file from a raw header string and data bytes.
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string load_error(const std::string& bytes) {
  try {
    parse_safetensors(bytes, "probe.safetensors");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("reads a file written by PyTorch's safetensors: every dtype converted like torch .float()") {
  const auto expected = nlohmann::json::parse(read_bytes(kDir + "torch_written.json"));
  const SafetensorsFile file = load_safetensors(kDir + "torch_written.safetensors");
  CHECK(file.metadata == SafetensorsMetadata{{"format", "pt"}, {"producer", "make_safetensors_fixture.py"}});
  REQUIRE(file.tensors.size() == expected["tensors"].size());
  for (const auto& [name, tensor] : file.tensors) {
    CAPTURE(name);
    REQUIRE(expected["tensors"].contains(name));
    const auto& want = expected["tensors"][name];
    CHECK(file.source_dtypes.at(name) == want["dtype"].get<std::string>());
    CHECK(tensor.shape() == want["shape"].get<Shape>());
    const auto want_bits = want["float32_bits"].get<std::vector<uint32_t>>();
    REQUIRE(int64_t(want_bits.size()) == tensor.numel());
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      CAPTURE(i);
      CHECK(bits(tensor.data()[i]) == want_bits[i]);
    }
  }
  // File order is data order: the package puts wider dtypes first (I64 ahead of F32 ahead of F16).
  CHECK(file.tensors.front().first == "count");
}

TEST_CASE("writes the same bytes as safetensors.torch.save_file for the same F32 tensors") {
  // Registration order differs from the canonical (sorted) order on purpose.
  NamedTensors tensors = {{"encoder.conv.weight", formula({2, 1, 3, 3, 3})}, {"encoder.conv.bias", formula({2})},
                          {"bn.running_var", formula({3})}, {"scalar", formula({})},
                          {"empty", formula({0, 4})}, {"Zeta", formula({1, 2, 1})}};
  const std::string reference = read_bytes(kDir + "canonical_f32.safetensors");
  CHECK(serialize_safetensors(tensors, {{"format", "pt"}}) == reference);
  TempDir dir;
  save_safetensors(dir.file("mine.safetensors"), tensors, {{"format", "pt"}});
  CHECK(read_bytes(dir.file("mine.safetensors")) == reference);
}

TEST_CASE("round trip keeps names, shapes, values and metadata; no temporary is left behind") {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  auto random = [&](const Shape& s) {
    Tensor t = Tensor::empty(s);
    for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = dist(rng);
    return t;
  };
  NamedTensors tensors = {{"w", random({3, 5, 7})}, {"s", random({})}, {"e", random({2, 0})}, {"unicode.é", random({4})}};
  tensors[0].second.data()[0] = -0.0f;
  tensors[0].second.data()[1] = std::numeric_limits<float>::infinity();
  SafetensorsMetadata meta = {{"step", "1200"}, {"rng", "42:9000"}, {"quote\"d", "line\nbreak"}};
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, tensors, meta);
  save_safetensors(path, tensors, meta);  // overwriting an existing checkpoint works
  const SafetensorsFile back = load_safetensors(path);
  CHECK(back.metadata == meta);
  REQUIRE(back.tensors.size() == tensors.size());
  for (const auto& [name, t] : tensors) {
    CAPTURE(name);
    auto it = std::find_if(back.tensors.begin(), back.tensors.end(), [&](auto& p) { return p.first == name; });
    REQUIRE(it != back.tensors.end());
    CHECK(it->second.shape() == t.shape());
    CHECK(std::memcmp(it->second.data(), t.data(), size_t(t.numel()) * 4) == 0);
  }
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);
  const std::string bytes = read_bytes(path);
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK(header_len % 8 == 0);
}

TEST_CASE("writing refuses bad input with messages naming the problem") {
  TempDir dir;
  const Tensor t = Tensor::ones({2});
  CHECK_THROWS_WITH_AS(save_safetensors(dir.file("a.safetensors"), {{"x", t}, {"x", t}}), doctest::Contains("'x' appears twice"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(save_safetensors(dir.file("a.safetensors"), {{"__metadata__", t}}), doctest::Contains("reserved"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(save_safetensors(dir.file("a.safetensors"), {{"", t}}), doctest::Contains("empty name"), std::runtime_error);
  CHECK_THROWS_WITH_AS(save_safetensors(dir.file("no/such/folder/a.safetensors"), {{"x", t}}),
                       doctest::Contains("no/such/folder/a.safetensors"), std::runtime_error);
  CHECK_THROWS_WITH_AS(save_safetensors(dir.file("a.safetensors"), {{"bad\xff", t}}), doctest::Contains("UTF-8"), std::runtime_error);
  CHECK_FALSE(fs::exists(dir.file("a.safetensors")));
  CHECK(fs::is_empty(dir.path));
  // A failed save never replaces an existing good file.
  save_safetensors(dir.file("good.safetensors"), {{"x", t}});
  CHECK_THROWS(save_safetensors(dir.file("good.safetensors"), {{"x", t}, {"x", t}}));
  CHECK(load_safetensors(dir.file("good.safetensors")).tensors.size() == 1);
}

TEST_CASE("corrupted or malformed files give clear errors naming the file") {
  const std::string good = make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0'));
  CHECK(parse_safetensors(good).tensors.size() == 1);

  CHECK_THROWS_WITH_AS(load_safetensors("/nonexistent/x.safetensors"), doctest::Contains("/nonexistent/x.safetensors"),
                       std::runtime_error);
  TempDir dir;
  write_bytes(dir.file("cut.safetensors"), good.substr(0, good.size() - 3));
  CHECK_THROWS_WITH_AS(load_safetensors(dir.file("cut.safetensors")),
                       doctest::Contains((dir.file("cut.safetensors") + "': tensor 'a': data_offsets [0,8] reach beyond the 5 data bytes").c_str()),
                       std::runtime_error);
  CHECK(load_error("abc").find("too short") != std::string::npos);
  CHECK(load_error("abc").find("probe.safetensors") != std::string::npos);
  CHECK(load_error(good.substr(0, 20)).find("exceeds the file size") != std::string::npos);  // truncated header
  CHECK(load_error(good.substr(0, good.size() - 1)).find("reach beyond") != std::string::npos);  // truncated data
  std::string huge = good;
  huge[7] = '\x7f';  // header length ~ 2^63
  CHECK(load_error(huge).find("exceeds the file size") != std::string::npos);

  CHECK(load_error(make_file("{\"a\": [1,", "")).find("not valid JSON") != std::string::npos);
  CHECK(load_error(make_file("[1, 2]", "")).find("not a JSON object") != std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", "x")).find("unsupported dtype 'F8_E4M3'") !=
        std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 0))).find("needs 12 bytes") !=
        std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", std::string(8, 0))).find("reach beyond") !=
        std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, 0))).find("begin > end") !=
        std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, 0))).find("non-negative") !=
        std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[2]}})", std::string(8, 0))).find("lacks \"data_offsets\"") !=
        std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                             std::string(8, 0)))
            .find("overlap") != std::string::npos);
  CHECK(load_error(make_file(R"({"__metadata__":{"k":3}})", "")).find("not a string") != std::string::npos);
  CHECK(load_error(make_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", std::string(8, 0)))
            .find("too large") != std::string::npos);
}

TEST_CASE("garbage: random corruptions of a valid file either load or throw runtime_error, never crash") {
  NamedTensors tensors = {{"weight", formula({3, 4})}, {"bias", formula({3})}, {"scalar", formula({})}};
  const std::string good = serialize_safetensors(tensors, {{"format", "pt"}});
  std::mt19937 rng(11);
  int loaded = 0, rejected = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bad = good;
    const int flips = 1 + int(rng() % 4);
    for (int f = 0; f < flips; ++f) bad[rng() % bad.size()] = char(rng() % 256);
    if (trial % 5 == 0) bad.resize(rng() % bad.size());
    try {
      parse_safetensors(bad, "fuzz");
      ++loaded;
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()).find("fuzz") != std::string::npos);
      ++rejected;
    }
  }
  CHECK(loaded + rejected == 2000);
  CHECK(rejected > 500);
}
