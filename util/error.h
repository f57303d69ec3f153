// tunekit::Error: the one exception type for problems a user can act on.
// The CLI prints what() on one line and exits 1.
#pragma once
#include <stdexcept>
#include <string>

namespace tunekit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace tunekit
