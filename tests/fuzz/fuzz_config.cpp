// libFuzzer target: the training-config parser (JSON document, defaults per preset and kind,
// validation) and the --set override syntax. The first line of the input is an override, the
// rest a config document. Anything must parse or be refused with an exception.
#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t newline = text.find('\n');
  const std::string override_line = newline == std::string::npos ? std::string() : text.substr(0, newline);
  const std::string document = newline == std::string::npos ? text : text.substr(newline + 1);
  try {
    const nlohmann::json j = nlohmann::json::parse(document);
    std::vector<std::string> overrides;
    if (!override_line.empty()) overrides.push_back(override_line);
    const cpets::train::Config c = cpets::train::config_from_document(j, overrides, "fuzz input");
    // What is accepted round-trips through the JSON the run folder stores.
    const cpets::train::Config again = cpets::train::config_from_json(cpets::train::config_to_json(c));
    if (cpets::train::config_to_json(again) != cpets::train::config_to_json(c)) __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
