#include "io/files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace cpets::io {

namespace fs = std::filesystem;

// Writes through a temporary file in the same folder, renamed into place, so a reader never
// sees half a file.
void write_text_atomic(const std::string& path, const std::string& content) {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  std::string tmp_name = target.filename().string();
  tmp_name.insert(0, 1, '.');
  tmp_name += ".tmp" + std::to_string(getpid());
  const fs::path tmp = target.parent_path() / tmp_name;
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw std::runtime_error("cannot create '" + tmp.string() + "' to write '" + path + "'");
    f << content;
    f.close();
    if (!f) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw std::runtime_error("writing '" + path + "' failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot move the temporary file into place for '" + path + "': " + ec.message());
  }
}

}  // namespace cpets::io
