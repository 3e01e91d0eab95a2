// The shared tail of the cpets-* mains: parse the command line, run, and map failures to exit
// codes the way every tool documents them — 0 done, 2 a bad command line or configuration
// (CLI11's errors and exceptions of the `Usage` types), 1 anything else (files, data), with the
// message printed as "error: …".
#pragma once
#include <CLI/CLI.hpp>

#include <exception>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpets::tools {

// "a,b,,c" → {"a", "b", "c"}: a comma-separated option value, empty items dropped.
inline std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

// A wrong flag value found after parsing (exit code 2).
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

template <class... Usage>
int run_main(CLI::App& app, int argc, char** argv, const std::function<int()>& run) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  try {
    return run();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    const bool usage = (dynamic_cast<const UsageError*>(&e) != nullptr) || (... || (dynamic_cast<const Usage*>(&e) != nullptr));
    return usage ? 2 : 1;
  }
}

}  // namespace cpets::tools
