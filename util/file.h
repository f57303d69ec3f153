// Writing files so that a reader never sees a torn one: the text goes to a temporary file
// beside the target, which is then renamed over it.
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace tunekit {

// Writes `text` to `path` via a temporary file and rename.
void write_file_atomic(const std::string& path, const std::string& text);

// A whole JSON file; "<path>: cannot open" or "<path>: not valid JSON (...)" otherwise.
nlohmann::json read_json_file(const std::string& path);

}  // namespace tunekit
