#include "io/png.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

namespace cpets::io {

// ---- libpng I/O -----------------------------------------------------------------------------

namespace {
struct FileCloser {
  void operator()(FILE* f) const { if (f) std::fclose(f); }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;
}  // namespace

void write_png(const std::string& path, const Image& img) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != size_t(img.width) * size_t(img.height) * 3)
    throw std::runtime_error("write_png: '" + path + "': image is " + std::to_string(img.width) + "×" +
                             std::to_string(img.height) + " with " + std::to_string(img.rgb.size()) + " bytes (expected width·height·3)");
  const std::string tmp = path + ".tmp";
  {
    FilePtr f(std::fopen(tmp.c_str(), "wb"));
    if (!f) throw std::runtime_error("write_png: cannot create '" + tmp + "'");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (!png || !info) {
      png_destroy_write_struct(&png, &info);
      throw std::runtime_error("write_png: libpng could not allocate its structures");
    }
    if (setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      throw std::runtime_error("write_png: libpng failed writing '" + tmp + "' (disk full?)");
    }
    png_init_io(png, f.get());
    png_set_IHDR(png, info, png_uint_32(img.width), png_uint_32(img.height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < img.height; ++y)
      png_write_row(png, const_cast<png_bytep>(img.rgb.data() + size_t(y) * size_t(img.width) * 3));
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
  }
  std::filesystem::rename(tmp, path);
}

Image read_png(const std::string& path) {
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw std::runtime_error("read_png: cannot open '" + path + "'");
  unsigned char sig[8];
  if (std::fread(sig, 1, 8, f.get()) != 8 || png_sig_cmp(sig, 0, 8))
    throw std::runtime_error("read_png: '" + path + "' is not a PNG file");
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error("read_png: libpng could not allocate its structures");
  }
  Image img;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error("read_png: '" + path + "' is corrupt or truncated");
  }
  png_init_io(png, f.get());
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  // Normalise every PNG flavour to 8-bit RGB.
  png_set_strip_16(png);
  png_set_palette_to_rgb(png);
  png_set_expand_gray_1_2_4_to_8(png);
  png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_read_update_info(png, info);
  img.width = int(png_get_image_width(png, info));
  img.height = int(png_get_image_height(png, info));
  img.rgb.resize(size_t(img.width) * size_t(img.height) * 3);
  for (int y = 0; y < img.height; ++y) png_read_row(png, img.rgb.data() + size_t(y) * size_t(img.width) * 3, nullptr);
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return img;
}

// ---- colour maps and text -------------------------------------------------------------------

std::array<uint8_t, 3> colormap(ColorMap map, double t) {
  if (!std::isfinite(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0);
  auto byte = [](double v) { return uint8_t(std::lround(std::clamp(v, 0.0, 1.0) * 255)); };
  switch (map) {
    case ColorMap::grey: return {byte(t), byte(t), byte(t)};
    case ColorMap::hot: return {byte(3 * t), byte(3 * t - 1), byte(3 * t - 2)};
    case ColorMap::diverging:
      if (t < 0.5) { const double u = 2 * t; return {byte(u), byte(u), 255}; }  // blue → white
      { const double u = 2 * (1 - t); return {255, byte(u), byte(u)}; }        // white → red
  }
  return {0, 0, 0};
}

namespace {

// 5×7 glyphs, one byte per row, bit 4 = leftmost column.
struct Glyph { char c; uint8_t rows[7]; };
constexpr Glyph kFont[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
};

const Glyph* find_glyph(char c) {
  c = char(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& g : kFont)
    if (g.c == c) return &g;
  return nullptr;  // spaces and unknown characters draw nothing
}

int text_width(const std::string& s, int scale) { return int(s.size()) * 6 * scale; }

void set_pixel(Image& img, int x, int y, std::array<uint8_t, 3> c) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  const size_t i = (size_t(y) * size_t(img.width) + size_t(x)) * 3;
  img.rgb[i] = c[0], img.rgb[i + 1] = c[1], img.rgb[i + 2] = c[2];
}

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

void draw_text(Image& img, int x, int y, const std::string& text, std::array<uint8_t, 3> colour, int scale) {
  for (size_t k = 0; k < text.size(); ++k) {
    const Glyph* g = find_glyph(text[k]);
    if (!g) continue;
    const int gx = x + int(k) * 6 * scale;
    for (int r = 0; r < 7; ++r)
      for (int c = 0; c < 5; ++c)
        if (g->rows[r] & (0x10 >> c))
          for (int a = 0; a < scale; ++a)
            for (int b = 0; b < scale; ++b) set_pixel(img, gx + c * scale + b, y + r * scale + a, colour);
  }
}

// ---- montages -------------------------------------------------------------------------------

namespace {

// One panel: the slice plane's two in-plane axes. Columns run along `col_axis` (left → right =
// increasing index), rows along `row_axis` (top = highest index: anterior / superior up).
struct PanelSpec { int col_axis, row_axis; };  // volume axes 0 = D (z), 1 = H (y), 2 = W (x)
constexpr PanelSpec kPanels[3] = {{2, 1}, {2, 0}, {1, 0}};  // axial (fixed d), coronal (fixed h), sagittal (fixed w)

std::pair<float, float> row_range(const MontageRow& row) {
  if (row.range) return *row.range;
  float lo = INFINITY, hi = -INFINITY, amax = 0;
  for (float v : row.volume->data)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v), amax = std::max(amax, std::abs(v));
  if (row.cmap == ColorMap::diverging) {
    if (amax == 0) amax = 1;
    return {-amax, amax};
  }
  if (!(hi > lo)) return {std::isfinite(lo) ? lo : 0.f, std::isfinite(lo) ? lo + 1 : 1.f};
  return {lo, hi};
}

}  // namespace

Image render_montage(const std::vector<MontageRow>& rows, const MontageOptions& opt,
                     std::vector<std::array<int, 4>>* panels) {
  if (rows.empty()) throw std::runtime_error("render_montage: no volumes to draw");
  const Volume& first = *rows.front().volume;
  for (const auto& r : rows) {
    if (!r.volume || r.volume->numel() <= 0)
      throw std::runtime_error("render_montage: row '" + r.label + "' has no volume");
    if (r.volume->shape != first.shape)
      throw std::runtime_error("render_montage: row '" + r.label + "' has shape " + shape_string(r.volume->shape) +
                               " but the first row has " + shape_string(first.shape) + "; montage rows must share a grid");
  }
  const auto vs = first.voxel_size();  // (x, y, z)
  const double mm_per_voxel[3] = {vs[2], vs[1], vs[0]};  // by volume axis (D, H, W)
  std::array<int64_t, 3> point{first.shape[0] / 2, first.shape[1] / 2, first.shape[2] / 2};
  if (opt.point) {
    point = *opt.point;
    for (int a = 0; a < 3; ++a)
      if (point[a] < 0 || point[a] >= first.shape[a])
        throw std::runtime_error("render_montage: point (" + std::to_string(point[0]) + ", " + std::to_string(point[1]) +
                                 ", " + std::to_string(point[2]) + ") lies outside the volume " + shape_string(first.shape));
  }
  // Pixels per mm so the tallest panel is at least min_panel_px high.
  double tallest_mm = 0;
  for (const auto& p : kPanels) tallest_mm = std::max(tallest_mm, first.shape[p.row_axis] * mm_per_voxel[p.row_axis]);
  const double px_per_mm = std::max(1.0, opt.min_panel_px / tallest_mm);
  int pw[3], ph[3];
  for (int k = 0; k < 3; ++k) {
    pw[k] = int(std::lround(first.shape[kPanels[k].col_axis] * mm_per_voxel[kPanels[k].col_axis] * px_per_mm));
    ph[k] = int(std::lround(first.shape[kPanels[k].row_axis] * mm_per_voxel[kPanels[k].row_axis] * px_per_mm));
  }
  const int text_scale = 2, gap = 6, bar_w = 18;
  int label_w = 0;
  for (const auto& r : rows) label_w = std::max(label_w, text_width(r.label, text_scale));
  label_w += label_w > 0 ? 2 * gap : gap;
  const int row_h = *std::max_element(ph, ph + 3) + 2 * gap;
  const int range_w = text_width("-0.000e+00", text_scale);
  Image img;
  img.width = label_w + pw[0] + pw[1] + pw[2] + 3 * gap + bar_w + gap + range_w + gap;
  img.height = row_h * int(rows.size());
  img.rgb.assign(size_t(img.width) * size_t(img.height) * 3, 0);
  const std::array<uint8_t, 3> white{255, 255, 255};

  for (size_t r = 0; r < rows.size(); ++r) {
    const Volume& v = *rows[r].volume;
    const auto [lo, hi] = row_range(rows[r]);
    const double inv = hi > lo ? 1.0 / (hi - lo) : 1.0;
    const int y0 = int(r) * row_h + gap;
    draw_text(img, gap, y0 + (row_h - 2 * gap) / 2 - 7, rows[r].label, white, text_scale);
    int x0 = label_w;
    for (int k = 0; k < 3; ++k) {
      const PanelSpec p = kPanels[k];
      const int64_t ncol = v.shape[p.col_axis], nrow = v.shape[p.row_axis];
      if (panels) panels->push_back({x0, y0, pw[k], ph[k]});
      for (int py = 0; py < ph[k]; ++py)
        for (int px = 0; px < pw[k]; ++px) {
          // Nearest neighbour: the voxel whose extent contains the pixel centre.
          const int64_t c = std::min<int64_t>(ncol - 1, int64_t((px + 0.5) / pw[k] * ncol));
          const int64_t rr = nrow - 1 - std::min<int64_t>(nrow - 1, int64_t((py + 0.5) / ph[k] * nrow));
          std::array<int64_t, 3> idx = point;
          idx[p.col_axis] = c;
          idx[p.row_axis] = rr;
          const float value = v.at(idx[0], idx[1], idx[2]);
          set_pixel(img, x0 + px, y0 + py, colormap(rows[r].cmap, (value - lo) * inv));
        }
      x0 += pw[k] + gap;
    }
    // Colour bar (top = high) with its range.
    const int bar_h = ph[0] > 0 ? *std::max_element(ph, ph + 3) : 1;
    for (int py = 0; py < bar_h; ++py) {
      const auto c = colormap(rows[r].cmap, 1.0 - (py + 0.5) / bar_h);
      for (int px = 0; px < bar_w; ++px) set_pixel(img, x0 + px, y0 + py, c);
    }
    draw_text(img, x0 + bar_w + gap, y0, short_number(hi), white, text_scale);
    draw_text(img, x0 + bar_w + gap, y0 + bar_h - 7 * text_scale, short_number(lo), white, text_scale);
  }
  return img;
}

void write_montage(const std::string& path, const std::vector<MontageRow>& rows, const MontageOptions& opt) {
  write_png(path, render_montage(rows, opt));
}

}  // namespace cpets::io
