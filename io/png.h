// PNG output on libpng: RGB images, and slice montages of volumes (three orthogonal slices per
// volume, one row per volume, a colour bar with its value range) for looking at data and results.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/volume.h"

namespace cpets::io {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // row-major, 3 bytes per pixel
  std::array<uint8_t, 3> pixel(int x, int y) const {
    const size_t i = (size_t(y) * size_t(width) + size_t(x)) * 3;
    return {rgb[i], rgb[i + 1], rgb[i + 2]};
  }
};

void write_png(const std::string& path, const Image& img);  // 8-bit RGB; atomic (temp + rename)
Image read_png(const std::string& path);                    // any PNG, converted to 8-bit RGB

enum class ColorMap { grey, hot, diverging };
// t ∈ [0, 1] (clamped) to a colour: grey black→white; hot black→red→yellow→white;
// diverging blue (0) → white (0.5) → red (1).
std::array<uint8_t, 3> colormap(ColorMap map, double t);

struct MontageRow {
  const Volume* volume = nullptr;
  std::string label;                               // drawn at the left (A–Z, 0–9, . - + : / _ %)
  ColorMap cmap = ColorMap::grey;
  std::optional<std::pair<float, float>> range;    // default: [min, max], or ±max|v| for diverging
};
struct MontageOptions {
  std::optional<std::array<int64_t, 3>> point;  // (d, h, w) voxel the three slices pass through; default centre
  int min_panel_px = 256;                       // the tallest panel is upscaled to at least this height
};

// One row per volume: axial (z), coronal (y) and sagittal (x) slices through the point, with
// aspect ratios from the voxel sizes, nearest-neighbour upscaling, and a colour bar labelled with
// the row's range. All volumes must share one shape.
// `panels`, if given, receives each panel's pixel rectangle {x, y, width, height}, row by row in
// the order axial, coronal, sagittal.
Image render_montage(const std::vector<MontageRow>& rows, const MontageOptions& opt = {},
                     std::vector<std::array<int, 4>>* panels = nullptr);
void write_montage(const std::string& path, const std::vector<MontageRow>& rows, const MontageOptions& opt = {});

// Draws text with the built-in 5×7 font at scale `scale` (each font pixel a scale×scale block).
void draw_text(Image& img, int x, int y, const std::string& text, std::array<uint8_t, 3> colour, int scale = 2);

}  // namespace cpets::io
