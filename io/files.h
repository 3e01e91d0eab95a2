// Small file helpers shared by io/, train/ and eval/.
#pragma once
#include <string>

namespace cpets::io {

// Writes `text` through a temporary file in the same folder (created if missing), renamed into
// place, so a reader sees the old file or the new one, never half of it. Errors name the path.
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace cpets::io
