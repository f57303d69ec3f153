#include "util/startup.h"

#include <exception>
#include <iostream>
#include <string>

#include "util/memory.h"
#include "util/threads.h"

namespace tunekit {

bool start_up(char** argv, const char* program) {
  select_blas_core(argv);  // returns only when no re-exec happens
  try {
    apply_allocator_policy();
  } catch (const std::exception& e) {
    std::cerr << (program && *program ? std::string(program) + ": " : std::string()) << "error: " << e.what() << "\n";
    return false;
  }
  return true;
}

}  // namespace tunekit
