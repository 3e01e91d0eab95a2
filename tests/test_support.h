// Small helpers the end-to-end tests share: a scratch folder removed at the end of its scope, a
// scoped OpenMP thread count, and the message of the exception a call throws.
#pragma once
#include <omp.h>
#include <unistd.h>

#include <exception>
#include <filesystem>
#include <functional>
#include <string>

namespace cpets::testing {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           ("cpets_test_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path.string(); }
};

// The tiny models of the end-to-end tests run faster on one thread on a shared, busy machine:
// every fork/join of their many small ops waits for a descheduled thread.
struct ThreadCount {
  int prev;
  explicit ThreadCount(int n) : prev(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(prev); }
};

// What f throws, or "(no exception)".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace cpets::testing
