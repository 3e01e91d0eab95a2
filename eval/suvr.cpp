#include "eval/suvr.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "io/nifti.h"
#include "io/preprocess.h"

namespace cpets::eval {

namespace fs = std::filesystem;

namespace {

std::string label_list(const std::vector<int>& labels) {
  std::string s;
  for (size_t i = 0; i < labels.size() && i < 12; ++i) s += (i ? "," : "") + std::to_string(labels[i]);
  if (labels.size() > 12) s += ",… (" + std::to_string(labels.size()) + " labels)";
  return s;
}

fs::path find_regions_json(const std::string& path) {
  const fs::path p(path);
  if (fs::is_regular_file(p)) return p;
  for (const fs::path& c : {p / "regions.json", p / "atlas" / "regions.json"})
    if (fs::is_regular_file(c)) return c;
  throw std::runtime_error("atlas: no regions.json at " + path + " (looked for the file itself, " + path +
                           "/regions.json and " + path + "/atlas/regions.json); the phantom writes one under atlas/");
}

}  // namespace

bool Atlas::has_six_rois() const {
  for (const auto& r : six_rois())
    if (!has(r)) return false;
  return true;
}

Atlas make_atlas(io::Volume labels, std::map<std::string, std::vector<int>> regions, std::string roi,
                 std::string reference) {
  Atlas a;
  a.labels = std::move(labels);
  a.regions = std::move(regions);
  a.roi = std::move(roi);
  a.reference = std::move(reference);
  for (const auto& name : {a.roi, a.reference})
    if (!a.regions.count(name))
      throw std::invalid_argument("atlas: region '" + name + "' is not defined (regions.json must name it)");
  // label → the regions it belongs to; one pass over the volume fills every list.
  std::map<int, std::vector<std::vector<int64_t>*>> owners;
  for (const auto& [name, labels_of] : a.regions) {
    auto& list = a.voxels[name];
    for (int l : labels_of) owners[l].push_back(&list);
  }
  const int64_t n = a.labels.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = a.labels.data[size_t(i)];
    const float r = std::nearbyint(v);
    if (!(std::fabs(v - r) <= 1e-3f))
      throw std::invalid_argument("atlas: label volume holds a non-integer value " + std::to_string(v) + " at voxel " +
                                  std::to_string(i) + "; it must be resampled with nearest neighbour");
    if (r == 0) continue;
    const auto it = owners.find(int(r));
    if (it != owners.end())
      for (auto* list : it->second) list->push_back(i);
  }
  for (const auto& name : {a.roi, a.reference})
    if (a.voxels[name].empty())
      throw std::invalid_argument("atlas: region '" + name + "' (labels " + label_list(a.regions[name]) +
                                  ") has no voxels in the " + io::shape_string(a.labels.shape) + " label volume");
  return a;
}

Atlas load_atlas(const std::string& path) {
  const fs::path json_path = find_regions_json(path);
  nlohmann::json j;
  try {
    std::ifstream in(json_path);
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("atlas: " + json_path.string() + " is not valid JSON: " + e.what());
  }
  auto need = [&](const char* key) -> const nlohmann::json& {
    if (!j.contains(key)) throw std::runtime_error("atlas: " + json_path.string() + " has no \"" + key + "\" entry");
    return j.at(key);
  };
  std::map<std::string, std::vector<int>> regions;
  try {
    for (const auto& [name, def] : need("regions").items()) regions[name] = def.at("labels").get<std::vector<int>>();
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("atlas: " + json_path.string() + ": every region needs a \"labels\" list of integers (" +
                             e.what() + ")");
  }
  const std::string volume_name = j.value("label_volume", std::string("labels.nii.gz"));
  const fs::path volume_path = json_path.parent_path() / volume_name;
  Atlas a = make_atlas(io::read_nifti(volume_path.string()), std::move(regions),
                       j.value("roi", std::string("cerebral_cortex")), j.value("reference", std::string("cerebellar_cortex")));
  a.source = json_path.string();
  return a;
}

Atlas atlas_on_grid(const Atlas& atlas, std::array<int64_t, 3> shape, const io::Affine& affine) {
  bool same = atlas.labels.shape == shape;
  for (int r = 0; r < 4 && same; ++r)
    for (int c = 0; c < 4 && same; ++c) same = std::fabs(atlas.labels.affine[r][c] - affine[r][c]) < 1e-4;
  if (same) return atlas;
  Atlas moved = make_atlas(io::resample_to_grid(atlas.labels, shape, affine, io::Interp::nearest, 0.f), atlas.regions,
                           atlas.roi, atlas.reference);
  moved.source = atlas.source + " (resampled to " + io::shape_string(shape) + ")";
  return moved;
}

double region_mean(const io::Volume& pet, const Atlas& atlas, const std::string& region) {
  if (pet.shape != atlas.labels.shape)
    throw std::invalid_argument("SUVR: the PET volume is " + io::shape_string(pet.shape) + " but the atlas is " +
                                io::shape_string(atlas.labels.shape) + "; put the PET on the atlas grid (or atlas_on_grid)");
  const auto it = atlas.voxels.find(region);
  if (it == atlas.voxels.end()) throw std::invalid_argument("SUVR: the atlas has no region '" + region + "'");
  if (it->second.empty())
    throw std::invalid_argument("SUVR: region '" + region + "' has no voxels in the atlas (" + atlas.source + ")");
  double s = 0;
  for (int64_t i : it->second) s += pet.data[size_t(i)];
  return s / double(it->second.size());
}

Suvr compute_suvr(const io::Volume& pet, const Atlas& atlas) {
  Suvr s;
  s.reference_mean = region_mean(pet, atlas, atlas.reference);
  if (!(s.reference_mean > 0))
    throw std::invalid_argument("SUVR: the mean over the reference region '" + atlas.reference + "' is " +
                                std::to_string(s.reference_mean) +
                                "; an empty PET, or one not aligned with the atlas");
  s.cortical = region_mean(pet, atlas, atlas.roi) / s.reference_mean;
  for (size_t k = 0; k < six_rois().size(); ++k) {
    const auto& name = six_rois()[k];
    const auto it = atlas.voxels.find(name);
    s.roi[k] = it != atlas.voxels.end() && !it->second.empty() ? region_mean(pet, atlas, name) / s.reference_mean
                                                               : std::numeric_limits<double>::quiet_NaN();
  }
  return s;
}

Suvr suvr_or_nan(const io::Volume& pet, const Atlas& atlas, std::string* why) {
  try {
    return compute_suvr(pet, atlas);
  } catch (const std::invalid_argument& e) {
    if (why) *why = e.what();
    Suvr s;
    s.cortical = s.reference_mean = std::numeric_limits<double>::quiet_NaN();
    s.roi.fill(s.cortical);
    return s;
  }
}

}  // namespace cpets::eval
