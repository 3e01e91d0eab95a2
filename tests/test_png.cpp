#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "io/png.h"

using namespace cpets::io;
namespace fs = std::filesystem;

namespace {
fs::path temp_png(const std::string& name) {
  return fs::temp_directory_path() / ("cpets_test_png_" + std::to_string(getpid()) + "_" + name + ".png");
}
}  // namespace

TEST_CASE("write_png / read_png round trip, errors name the file") {
  Image img;
  img.width = 7;
  img.height = 5;
  img.rgb.resize(7 * 5 * 3);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t((i * 37) % 256);
  const fs::path p = temp_png("roundtrip");
  write_png(p.string(), img);
  const Image back = read_png(p.string());
  CHECK(back.width == 7);
  CHECK(back.height == 5);
  CHECK(back.rgb == img.rgb);
  fs::remove(p);
  Image bad = img;
  bad.rgb.pop_back();
  CHECK_THROWS_WITH(write_png(p.string(), bad), doctest::Contains("expected width·height·3"));
  const fs::path txt = temp_png("text");
  std::ofstream(txt) << "not a png";
  CHECK_THROWS_WITH(read_png(txt.string()), doctest::Contains("is not a PNG"));
  fs::remove(txt);
  CHECK_THROWS_WITH(read_png("/nonexistent/x.png"), doctest::Contains("/nonexistent/x.png"));
}

TEST_CASE("colour maps: end points and the diverging midpoint") {
  CHECK(colormap(ColorMap::grey, 0) == std::array<uint8_t, 3>{0, 0, 0});
  CHECK(colormap(ColorMap::grey, 1) == std::array<uint8_t, 3>{255, 255, 255});
  CHECK(colormap(ColorMap::hot, 0) == std::array<uint8_t, 3>{0, 0, 0});
  CHECK(colormap(ColorMap::hot, 1.0 / 3) == std::array<uint8_t, 3>{255, 0, 0});
  CHECK(colormap(ColorMap::hot, 1) == std::array<uint8_t, 3>{255, 255, 255});
  CHECK(colormap(ColorMap::diverging, 0) == std::array<uint8_t, 3>{0, 0, 255});
  CHECK(colormap(ColorMap::diverging, 0.5) == std::array<uint8_t, 3>{255, 255, 255});
  CHECK(colormap(ColorMap::diverging, 1) == std::array<uint8_t, 3>{255, 0, 0});
  CHECK(colormap(ColorMap::grey, 7) == colormap(ColorMap::grey, 1));  // clamped
}

TEST_CASE("montage: panel sizes follow voxel sizes, pixels are the nearest voxel's colour") {
  // Anisotropic voxels: x 2 mm, y 1 mm, z 3 mm; shape (D,H,W) = (5, 12, 7).
  Volume v = make_volume({5, 12, 7}, 0.f, scaling_affine(2, 1, 3));
  for (int64_t d = 0; d < 5; ++d)
    for (int64_t h = 0; h < 12; ++h)
      for (int64_t w = 0; w < 7; ++w) v.at(d, h, w) = float(w + 10 * h + 100 * d);
  Volume diff = v;
  for (float& x : diff.data) x -= 300;  // values −300 … 216: diverging range ±300
  std::vector<std::array<int, 4>> panels;
  const Image img = render_montage({{&v, "T1", ColorMap::grey, std::nullopt},
                                    {&diff, "ERR", ColorMap::diverging, std::nullopt}},
                                   {}, &panels);
  REQUIRE(panels.size() == 6);
  // Tallest panel: max(H·1, D·3, D·3) = 15 mm → 256/15 px per mm.
  const double s = 256.0 / 15;
  CHECK(panels[0][2] == std::lround(7 * 2 * s));   // axial width: x extent 14 mm
  CHECK(panels[0][3] == std::lround(12 * 1 * s));  // axial height: y extent 12 mm
  CHECK(panels[1][3] == 256);                       // coronal height: z extent 15 mm
  CHECK(panels[2][2] == std::lround(12 * 1 * s));  // sagittal width: y extent
  CHECK(panels[3][1] > panels[0][1] + panels[1][3]);  // second row below the first
  const fs::path p = temp_png("montage");
  write_montage(p.string(), {{&v, "T1", ColorMap::grey, std::nullopt}, {&diff, "ERR", ColorMap::diverging, std::nullopt}});
  const Image back = read_png(p.string());
  fs::remove(p);
  CHECK(back.width == img.width);
  CHECK(back.height == img.height);
  CHECK(back.rgb == img.rgb);
  const double lo = 0, hi = 6 + 110 + 400;
  // Axial panel (slice d = 2): column ↔ w, top row ↔ highest h.
  for (int64_t h : {0, 5, 11})
    for (int64_t w : {0, 3, 6}) {
      const auto& r = panels[0];
      const int px = r[0] + int((w + 0.5) / 7 * r[2]), py = r[1] + int((11 - h + 0.5) / 12 * r[3]);
      CHECK(back.pixel(px, py) == colormap(ColorMap::grey, (v.at(2, h, w) - lo) / (hi - lo)));
    }
  // Sagittal panel of the difference row (slice w = 3): column ↔ h, top ↔ highest d.
  for (int64_t d : {0, 4})
    for (int64_t h : {1, 10}) {
      const auto& r = panels[5];
      const int px = r[0] + int((h + 0.5) / 12 * r[2]), py = r[1] + int((4 - d + 0.5) / 5 * r[3]);
      CHECK(back.pixel(px, py) == colormap(ColorMap::diverging, (diff.at(d, h, 3) + 300.0) / 600.0));
    }
  // Colour bar of the first row: top is the high end of the map, bottom the low end.
  const int bar_x = panels[2][0] + panels[2][2] + 6 + 5;
  CHECK(back.pixel(bar_x, panels[0][1]) == colormap(ColorMap::grey, 1 - 0.5 / 256));
  CHECK(back.pixel(bar_x, panels[0][1] + 255) == colormap(ColorMap::grey, 0.5 / 256));
  // Labels are drawn: some white pixels left of the first panel.
  int white = 0;
  for (int y = panels[0][1]; y < panels[0][1] + panels[1][3]; ++y)
    for (int x = 0; x < panels[0][0]; ++x) white += back.pixel(x, y) == std::array<uint8_t, 3>{255, 255, 255};
  CHECK(white > 20);
  // Rows on different grids are refused with both shapes named.
  Volume other = make_volume({5, 12, 8}, 1.f);
  CHECK_THROWS_WITH(render_montage({{&v, "A", ColorMap::grey, std::nullopt}, {&other, "B", ColorMap::grey, std::nullopt}}),
                    doctest::Contains("5×12×8"));
}
